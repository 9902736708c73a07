import RedisClient
import Testing

@testable import HeraldCore

@Suite("configuration: TLS to Redis, to engines, and on the listener")
struct RedisTLSSettingsTests {
    @Test("rediss:// with a CA, a client certificate and key; insecure as a flag")
    func settings() throws {
        let configuration = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "REDIS_URL": "rediss://:secret@cache.example.com:6380", "REDIS_TLS_CA_FILE": "/etc/ca.pem",
            "REDIS_TLS_CERT_FILE": "/etc/client.pem", "REDIS_TLS_KEY_FILE": "/etc/client.key",
        ])
        #expect(configuration.redisURL == "rediss://:secret@cache.example.com:6380")
        #expect(
            configuration.redisTLS == RedisConfiguration.TLS(caFile: "/etc/ca.pem", certificateFile: "/etc/client.pem", keyFile: "/etc/client.key")
        )
        let insecure = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "REDIS_URL": "rediss://h", "REDIS_TLS_INSECURE": "1",
        ])
        #expect(!insecure.redisTLS.verifiesServer)
    }

    @Test("HERALD_OUTBOUND_CA_FILE names the CAs the engine and JWKS calls trust; unset, the system's store")
    func outboundCA() throws {
        #expect(try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"]).outboundCAFile == nil)
        let configuration = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "HERALD_OUTBOUND_CA_FILE": "/etc/private-ca.pem"])
        #expect(configuration.outboundCAFile == "/etc/private-ca.pem")
    }

    @Test("HERALD_TLS_CERT_FILE with HERALD_TLS_KEY_FILE put the listener on TLS; neither, plain HTTP")
    func listener() throws {
        #expect(try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1"]).serverTLS == nil)
        let configuration = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "HERALD_TLS_CERT_FILE": "/etc/herald/fullchain.pem", "HERALD_TLS_KEY_FILE": "/etc/herald/key.pem",
        ])
        #expect(configuration.serverTLS == ServerTLSFiles(certificateFile: "/etc/herald/fullchain.pem", keyFile: "/etc/herald/key.pem"))
    }

    @Test("TLS settings with redis://, or a certificate without its key, are refused naming the variable", arguments: [
        (["HERALD_TLS_CERT_FILE": "/etc/herald/fullchain.pem"], "HERALD_TLS_KEY_FILE"),
        (["HERALD_TLS_KEY_FILE": "/etc/herald/key.pem"], "HERALD_TLS_CERT_FILE"),
        (["REDIS_TLS_CA_FILE": "/etc/ca.pem"], "REDIS_URL"),
        (["REDIS_URL": "rediss://h", "REDIS_TLS_CERT_FILE": "/etc/client.pem"], "REDIS_TLS_CERT_FILE"),
        (["REDIS_URL": "rediss://h", "REDIS_TLS_KEY_FILE": "/etc/client.key"], "REDIS_TLS_CERT_FILE"),
        (["REDIS_URL": "rediss://h", "REDIS_TLS_INSECURE": "maybe"], "REDIS_TLS_INSECURE"),
    ])
    func refused(environment: [String: String], variable: String) {
        do {
            _ = try HeraldConfiguration.fromEnvironment(environment.merging(["HERALD_INSECURE_DEV": "1"]) { value, _ in value })
            Issue.record("accepted \(environment)")
        } catch {
            #expect(error.variable == variable, "\(error)")
        }
    }
}
