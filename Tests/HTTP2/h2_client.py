"""An HTTP/2 client (the h2 library) for Herald's tests: opens the event streams of several threads on ONE
connection (TLS, ALPN h2) and, once every stream has said ': connected', does MODE to the first stream:

    reset   resets it (RST_STREAM) and prints 'reset';
    stall   stops reading it (its flow-control window is never opened again; the connection's is) and prints
            'stalled'.

It goes on reading the other streams for SECONDS, then prints one JSON line: each stream's :status, whether the
server reset it, and the text each received.

    h2_client.py MODE HOST PORT CA_FILE TOKEN SECONDS THREAD [THREAD ...]
"""

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    mode, host, port, authority_file, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    seconds, threads = float(sys.argv[6]), sys.argv[7:]
    context = ssl.create_default_context(cafile=authority_file)
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    if sock.selected_alpn_protocol() != "h2":
        sys.exit(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
    connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    streams = []
    for thread in threads:
        stream = connection.get_next_available_stream_id()
        headers = [
            (":method", "GET"), (":path", f"/chats/sse/{thread}"), (":scheme", "https"), (":authority", f"{host}:{port}"),
            ("authorization", f"Bearer {token}"),
        ]
        connection.send_headers(stream, headers, end_stream=True)
        streams.append(stream)
    sock.sendall(connection.data_to_send())

    received = {stream: b"" for stream in streams}
    status = {}
    reset_by_server = set()
    stalled = None
    deadline = None
    sock.settimeout(0.2)
    while deadline is None or time.time() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            data = None
        if data == b"":
            break
        if data:
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    if event.stream_id in received:
                        received[event.stream_id] += event.data
                    if event.stream_id == stalled:
                        # Read, but not acknowledged to the stream: only the connection's window opens again.
                        connection.increment_flow_control_window(event.flow_controlled_length)
                    else:
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    reset_by_server.add(event.stream_id)
            pending = connection.data_to_send()
            if pending:
                sock.sendall(pending)
        if deadline is None and all(b": connected" in received[stream] for stream in streams):
            if mode == "reset":
                connection.reset_stream(streams[0])
                sock.sendall(connection.data_to_send())
                print("reset", flush=True)
            else:
                stalled = streams[0]
                print("stalled", flush=True)
            deadline = time.time() + seconds
    print(json.dumps({
        "status": [status.get(stream, "") for stream in streams],
        "reset_by_server": [stream in reset_by_server for stream in streams],
        "received": [received[stream].decode() for stream in streams],
    }), flush=True)


if __name__ == "__main__":
    main()
