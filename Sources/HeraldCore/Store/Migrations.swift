/// The schema, as an ordered list of migrations. Applied in order, each in its own transaction, under an
/// advisory lock so nodes starting together don't race.
enum Migrations {
    static let all: [(version: Int, sql: String)] = [
        (1, """
        CREATE TABLE threads (
            id uuid PRIMARY KEY,
            owner text NOT NULL,
            title text,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX threads_owner_recent ON threads (owner, created_at DESC, id DESC);

        CREATE TABLE runs (
            id uuid PRIMARY KEY,
            thread_id uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'timed_out')),
            assistant_message_id uuid NOT NULL UNIQUE,
            engine_run_id text,
            error_code text,
            error_message text,
            deadline timestamptz NOT NULL,
            -- set once the final frames are on the stream: the outbox flag for webhooks that arrive while Redis is down
            final_published boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX runs_thread ON runs (thread_id);
        CREATE INDEX runs_open_by_deadline ON runs (deadline) WHERE status IN ('queued', 'running');
        CREATE INDEX runs_unpublished ON runs (updated_at)
            WHERE NOT final_published AND status IN ('completed', 'failed', 'timed_out');

        CREATE TABLE messages (
            seq bigserial UNIQUE,
            id uuid PRIMARY KEY,
            thread_id uuid NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
            run_id uuid REFERENCES runs (id) ON DELETE CASCADE,
            role text NOT NULL CHECK (role IN ('user', 'assistant')),
            content text NOT NULL,
            status text NOT NULL DEFAULT 'complete',
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX messages_thread_order ON messages (thread_id, seq);
        """),
        (2, """
        -- SHA-256 of the per-run token in the callback URL handed to engines that cannot sign.
        ALTER TABLE runs ADD COLUMN callback_token_hash text;
        -- Standard Webhooks `webhook-id`s already processed: a redelivery is answered without effect.
        CREATE TABLE webhook_deliveries (
            id text PRIMARY KEY,
            received_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX webhook_deliveries_age ON webhook_deliveries (received_at);
        """),
        (3, """
        -- The final frames' publication is claimed for a while, not for ever: a node that dies between
        -- claiming and publishing leaves a claim that expires, and the sweeper publishes the run.
        ALTER TABLE runs ADD COLUMN publish_claimed_at timestamptz;
        """),
        (4, """
        -- The response cache entry a completed run's reply fills (hex SHA-256 of assistant and question); set when
        -- the send asked for the cache and missed. Kept with the run because the result may reach any node.
        ALTER TABLE runs ADD COLUMN cache_key text;
        """),
    ]
}
