import Foundation
import Logging
import PostgresClient

/// A thread that does not exist, or (with owners) is not the caller's: the two look the same from outside.
public struct NotFound: Error, Equatable {
    public let what: String

    public init(what: String) {
        self.what = what
    }
}

/// Threads, messages and runs in PostgreSQL. Every value travels as a bound parameter; SQL text is constant.
public struct ChatStore: Sendable {
    let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    // MARK: Schema

    public func migrate(logger: Logger) async throws {
        try await pool.execute(script: "CREATE TABLE IF NOT EXISTS herald_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in Migrations.all {
            let applied = try await pool.transaction { connection -> Bool in
                _ = try connection.query("SELECT pg_advisory_xact_lock(7261)")
                let done = try connection.query("SELECT 1 FROM herald_schema_migrations WHERE version = $1", [String(migration.version)])
                guard done.rows.isEmpty else { return false }
                try connection.execute(script: migration.sql)
                _ = try connection.query("INSERT INTO herald_schema_migrations (version) VALUES ($1)", [String(migration.version)])
                return true
            }
            if applied { logger.info("applied migration", metadata: ["version": "\(migration.version)"]) }
        }
    }

    // MARK: Threads

    public func createThread(owner: String, title: String?, metadata: JSONValue) async throws -> ChatThread {
        let result = try await pool.query(
            "INSERT INTO threads (id, owner, title, metadata) VALUES ($1::uuid, $2, $3, $4::jsonb) RETURNING \(SQL.threadColumns)",
            [UUID().text, owner, title, metadata.jsonText]
        )
        return try SQL.thread(result.rows[0])
    }

    /// The owner's threads, newest first. `before` is the cursor a previous page returned.
    public func listThreads(owner: String, limit: Int, before cursor: ThreadCursor?) async throws -> (threads: [ChatThread], next: ThreadCursor?) {
        let result = try await pool.query(
            """
            SELECT \(SQL.threadColumns), created_at AS sort_key FROM threads
            WHERE owner = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
            ORDER BY created_at DESC, id DESC LIMIT $4
            """,
            [owner, cursor?.createdAt, cursor?.id.text, String(limit + 1)]
        )
        let threads = try result.rows.prefix(limit).map(SQL.thread)
        var next: ThreadCursor?
        if result.rows.count > limit, let last = result.rows.prefix(limit).last, let sortKey = last["sort_key"], let id = threads.last?.id {
            next = ThreadCursor(createdAt: sortKey, id: id)
        }
        return (threads, next)
    }

    public func thread(_ id: UUID, owner: String) async throws -> ChatThread {
        let result = try await pool.query(
            "SELECT \(SQL.threadColumns) FROM threads WHERE id = $1::uuid AND owner = $2", [id.text, owner]
        )
        guard let row = result.rows.first else { throw NotFound(what: "thread") }
        return try SQL.thread(row)
    }

    public func threadExists(_ id: UUID, owner: String) async throws -> Bool {
        try await !pool.query("SELECT 1 FROM threads WHERE id = $1::uuid AND owner = $2", [id.text, owner]).rows.isEmpty
    }

    /// Sets the title, or clears it with nil; the thread counts as updated.
    public func renameThread(_ id: UUID, owner: String, title: String?) async throws -> ChatThread {
        let result = try await pool.query(
            "UPDATE threads SET title = $3, updated_at = clock_timestamp() WHERE id = $1::uuid AND owner = $2 RETURNING \(SQL.threadColumns)",
            [id.text, owner, title]
        )
        guard let row = result.rows.first else { throw NotFound(what: "thread") }
        return try SQL.thread(row)
    }

    /// Deletes those of `ids` that are the owner's, with their messages and runs, in one statement; returns them.
    public func deleteThreads(_ ids: [UUID], owner: String) async throws -> Set<UUID> {
        let rows = try await pool.query(
            "DELETE FROM threads WHERE owner = $1 AND id = ANY($2::uuid[]) RETURNING id",
            [owner, "{" + ids.map(\.text).joined(separator: ",") + "}"]
        ).rows
        return Set(try rows.map { try SQL.uuid($0, "id") })
    }

    /// Deletes the owner's threads that have no message; returns them, newest first.
    public func deleteEmptyThreads(owner: String) async throws -> [UUID] {
        try await pool.query(
            """
            WITH deleted AS (
                DELETE FROM threads WHERE owner = $1 AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.thread_id = threads.id)
                RETURNING id, created_at
            )
            SELECT id FROM deleted ORDER BY created_at DESC, id DESC
            """,
            [owner]
        ).rows.map { try SQL.uuid($0, "id") }
    }

    // MARK: Messages

    /// Messages in order; `after` is a message id of the same thread (exclusive).
    public func messages(thread: UUID, owner: String, after: UUID?, limit: Int) async throws -> [ChatMessage] {
        guard try await threadExists(thread, owner: owner) else { throw NotFound(what: "thread") }
        let result = try await pool.query(
            """
            SELECT \(SQL.messageColumns) FROM messages
            WHERE thread_id = $1::uuid
              AND ($2::uuid IS NULL OR seq > (SELECT seq FROM messages WHERE id = $2::uuid AND thread_id = $1::uuid))
            ORDER BY seq LIMIT $3
            """,
            [thread.text, after?.text, String(limit)]
        )
        return try result.rows.map(SQL.message)
    }

    public func messageExists(_ id: UUID, thread: UUID) async throws -> Bool {
        try await !pool.query("SELECT 1 FROM messages WHERE id = $1::uuid AND thread_id = $2::uuid", [id.text, thread.text]).rows.isEmpty
    }

    // MARK: Runs

    /// Stores the user's message and a queued run in one transaction. `cacheKey`: the response cache entry the
    /// run's reply fills when it completes.
    public func createSend(
        thread: UUID, owner: String, content: String, metadata: JSONValue, timeoutSeconds: Double, callbackTokenHash: String,
        cacheKey: String?
    ) async throws -> (ChatMessage, ChatRun) {
        try await pool.transaction { connection in
            try Self.insertSend(
                connection, thread: thread, owner: owner, content: content, metadata: metadata,
                run: """
                    INSERT INTO runs (id, thread_id, status, assistant_message_id, deadline, callback_token_hash, cache_key)
                    VALUES ($1::uuid, $2::uuid, 'queued', $3::uuid, clock_timestamp() + make_interval(secs => $4::float8), $5, $6)
                    RETURNING \(SQL.runColumns)
                    """,
                [String(timeoutSeconds), callbackTokenHash, cacheKey]
            )
        }
    }

    /// Stores a send answered from the response cache in one transaction: the user's message, a run that is
    /// `completed` at once, and `reply` as the run's assistant message. The run's frames are still to be published.
    public func createCachedSend(
        thread: UUID, owner: String, content: String, metadata: JSONValue, reply: String
    ) async throws -> (message: ChatMessage, run: ChatRun, reply: ChatMessage) {
        try await pool.transaction { connection in
            let (message, run) = try Self.insertSend(
                connection, thread: thread, owner: owner, content: content, metadata: metadata,
                run: """
                    INSERT INTO runs (id, thread_id, status, assistant_message_id, deadline)
                    VALUES ($1::uuid, $2::uuid, 'completed', $3::uuid, clock_timestamp()) RETURNING \(SQL.runColumns)
                    """,
                []
            )
            return (message, run, try Self.insertReply(reply, of: run, connection: connection))
        }
    }

    /// What every send stores: the run (`runSQL` with the run id, thread id and assistant message id as $1…$3, then
    /// `runParameters`), then the user's message; the thread, locked against deletion meanwhile, counts as updated.
    private static func insertSend(
        _ connection: PostgresConnection, thread: UUID, owner: String, content: String, metadata: JSONValue,
        run runSQL: String, _ runParameters: [String?]
    ) throws -> (ChatMessage, ChatRun) {
        guard try !connection.query(
            "SELECT 1 FROM threads WHERE id = $1::uuid AND owner = $2 FOR SHARE", [thread.text, owner]
        ).rows.isEmpty else { throw NotFound(what: "thread") }
        let run = try SQL.run(connection.query(runSQL, [UUID().text, thread.text, UUID().text] + runParameters).rows[0])
        let message = try connection.query(
            """
            INSERT INTO messages (id, thread_id, run_id, role, content, metadata)
            VALUES ($1::uuid, $2::uuid, $3::uuid, 'user', $4, $5::jsonb) RETURNING \(SQL.messageColumns)
            """,
            [UUID().text, thread.text, run.id.text, content, metadata.jsonText]
        )
        _ = try connection.query("UPDATE threads SET updated_at = clock_timestamp() WHERE id = $1::uuid", [thread.text])
        return (try SQL.message(message.rows[0]), run)
    }

    /// The run's assistant message, with the id the run fixed for it.
    private static func insertReply(_ content: String, of run: ChatRun, connection: PostgresConnection) throws -> ChatMessage {
        let inserted = try connection.query(
            """
            INSERT INTO messages (id, thread_id, run_id, role, content)
            VALUES ($1::uuid, $2::uuid, $3::uuid, 'assistant', $4) RETURNING \(SQL.messageColumns)
            """,
            [run.assistantMessageID.text, run.threadID.text, run.id.text, content]
        )
        return try SQL.message(inserted.rows[0])
    }

    /// Undoes a send whose frames could not be published, so the client's retry starts clean.
    public func discardSend(run: UUID) async throws {
        _ = try await pool.query("DELETE FROM runs WHERE id = $1::uuid", [run.text])
    }

    public func run(_ id: UUID) async throws -> ChatRun? {
        try await pool.query("SELECT \(SQL.runColumns) FROM runs WHERE id = $1::uuid", [id.text]).rows.first.map(SQL.run)
    }

    public func run(engineRunID: String) async throws -> ChatRun? {
        try await pool.query("SELECT \(SQL.runColumns) FROM runs WHERE engine_run_id = $1", [engineRunID]).rows.first.map(SQL.run)
    }

    /// queued → running once the engine accepted the run. False when the run already moved on.
    public func markRunning(_ id: UUID, engineRunID: String?) async throws -> Bool {
        try await pool.query(
            """
            UPDATE runs SET status = 'running', engine_run_id = COALESCE($2, engine_run_id), updated_at = clock_timestamp()
            WHERE id = $1::uuid AND status = 'queued'
            """,
            [id.text, engineRunID]
        ).affectedRows > 0
    }

    public enum Finalization: Sendable {
        /// This call moved the run to its final status; `cacheKey` is the response cache entry its reply fills.
        case finalized(ChatRun, ChatMessage?, cacheKey: String?)
        /// The run was already final (a retried delivery); nothing was written.
        case alreadyFinal(ChatRun, ChatMessage?)
    }

    /// Moves an open run to a final status, storing the assistant reply for `completed`. Idempotent: a run that
    /// is already final is returned as it is.
    public func finalize(run id: UUID, status: RunStatus, reply: String?, error: ErrorDetail?) async throws -> Finalization {
        precondition(status.isFinal)
        return try await pool.transaction { connection in
            guard let row = try connection.query("SELECT \(SQL.runColumns) FROM runs WHERE id = $1::uuid FOR UPDATE", [id.text]).rows.first else {
                throw NotFound(what: "run")
            }
            let run = try SQL.run(row)
            if run.status.isFinal {
                return .alreadyFinal(run, try Self.reply(of: run, connection: connection))
            }
            let message = status == .completed ? try Self.insertReply(reply ?? "", of: run, connection: connection) : nil
            let updated = try connection.query(
                """
                UPDATE runs SET status = $2, error_code = $3, error_message = $4, updated_at = clock_timestamp()
                WHERE id = $1::uuid RETURNING \(SQL.runColumns), cache_key
                """,
                [run.id.text, status.rawValue, error?.code, error?.message]
            )
            return .finalized(try SQL.run(updated.rows[0]), message, cacheKey: updated.rows[0]["cache_key"])
        }
    }

    private static func reply(of run: ChatRun, connection: PostgresConnection) throws -> ChatMessage? {
        try connection.query(SQL.messageByID, [run.assistantMessageID.text])
            .rows.first.map(SQL.message)
    }

    /// How long a claim to publish holds before someone else may take over (publishing takes milliseconds).
    static let publicationLeaseSeconds = 30

    /// Claims the right to publish a final run's frames: true for one caller at a time, until it calls
    /// `markPublished` or `releasePublication`, or its lease runs out.
    public func claimPublication(run: UUID) async throws -> Bool {
        try await pool.query(
            """
            UPDATE runs SET publish_claimed_at = clock_timestamp()
            WHERE id = $1::uuid AND NOT final_published AND status IN ('completed', 'failed', 'timed_out')
              AND (publish_claimed_at IS NULL OR publish_claimed_at < clock_timestamp() - make_interval(secs => $2::int))
            """,
            [run.text, String(Self.publicationLeaseSeconds)]
        ).affectedRows > 0
    }

    /// The final frames are on the stream: the run takes no more results.
    public func markPublished(run: UUID) async throws {
        _ = try await pool.query("UPDATE runs SET final_published = true WHERE id = $1::uuid", [run.text])
    }

    /// Gives a claim back after publishing failed, so a retry (or the sweeper) publishes later.
    public func releasePublication(run: UUID) async throws {
        _ = try await pool.query("UPDATE runs SET publish_claimed_at = NULL WHERE id = $1::uuid", [run.text])
    }

    /// Open runs past their deadline become `timed_out`; returns them (each once across all nodes).
    public func expireOverdueRuns(limit: Int = 100) async throws -> [ChatRun] {
        try await pool.query(
            """
            UPDATE runs SET status = 'timed_out', error_code = 'run_timed_out',
                error_message = 'the engine did not answer before the run timed out', updated_at = clock_timestamp()
            WHERE id IN (
                SELECT id FROM runs WHERE status IN ('queued', 'running') AND deadline < clock_timestamp()
                ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            RETURNING \(SQL.runColumns)
            """,
            [String(limit)]
        ).rows.map(SQL.run)
    }

    /// Final runs whose frames are not on the stream yet, older than `graceSeconds` (the webhook handler that
    /// finalized them publishes itself; this is the safety net).
    public func unpublishedFinalRuns(graceSeconds: Double, limit: Int = 100) async throws -> [(ChatRun, ChatMessage?)] {
        let rows = try await pool.query(
            """
            SELECT \(SQL.runColumns) FROM runs
            WHERE NOT final_published AND status IN ('completed', 'failed', 'timed_out')
              AND updated_at < clock_timestamp() - make_interval(secs => $1::float8)
            ORDER BY updated_at LIMIT $2
            """,
            [String(graceSeconds), String(limit)]
        ).rows
        var result: [(ChatRun, ChatMessage?)] = []
        for row in rows {
            let run = try SQL.run(row)
            let message = try await pool.query(SQL.messageByID, [run.assistantMessageID.text])
                .rows.first.map(SQL.message)
            result.append((run, message))
        }
        return result
    }

    /// What a callback token is checked against: the stored hash, and whether the run can still take results
    /// (open, or final but not yet on the stream, so the engine's retry after a 503 still gets through).
    public struct CallbackGrant: Sendable {
        public let tokenHash: String?
        public let thread: UUID
        public let assistantMessageID: UUID
        public let isOpen: Bool
        public let acceptsResults: Bool
    }

    public func callbackGrant(run: UUID) async throws -> CallbackGrant? {
        guard let row = try await pool.query(
            """
            SELECT callback_token_hash, thread_id, assistant_message_id, status IN ('queued', 'running') AS open,
                   (status IN ('queued', 'running') OR NOT final_published) AS accepts
            FROM runs WHERE id = $1::uuid
            """,
            [run.text]
        ).rows.first else { return nil }
        return CallbackGrant(
            tokenHash: row["callback_token_hash"], thread: try SQL.uuid(row, "thread_id"),
            assistantMessageID: try SQL.uuid(row, "assistant_message_id"), isOpen: row["open"] == "t", acceptsResults: row["accepts"] == "t"
        )
    }

    /// Whether a Standard Webhooks delivery id was already processed.
    public func deliverySeen(_ id: String) async throws -> Bool {
        try await !pool.query("SELECT 1 FROM webhook_deliveries WHERE id = $1", [id]).rows.isEmpty
    }

    /// Records a processed delivery id; ids older than a day are forgotten on the way (senders stop
    /// retrying long before that).
    public func recordDelivery(_ id: String) async throws {
        _ = try await pool.query("INSERT INTO webhook_deliveries (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", [id])
    }

    public func forgetOldDeliveries() async throws {
        _ = try await pool.query("DELETE FROM webhook_deliveries WHERE received_at < clock_timestamp() - interval '1 day'")
    }

    public func ping() async throws {
        _ = try await pool.query("SELECT 1")
    }
}

/// Opaque page cursor of `GET /chats`: the last thread's creation time and id.
public struct ThreadCursor: Sendable, Equatable {
    public var createdAt: String
    public var id: UUID

    public init(createdAt: String, id: UUID) {
        self.createdAt = createdAt
        self.id = id
    }

    public var token: String {
        Data("\(createdAt)|\(id.text)".utf8).base64EncodedString()
    }

    public init?(token: String) {
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: "|", maxSplits: 1)
        guard parts.count == 2, let id = UUID(uuidString: String(parts[1])), parts[0].count <= 40 else { return nil }
        self.init(createdAt: String(parts[0]), id: id)
    }
}

/// Column lists and row decoding, in one place.
enum SQL {
    static let timestamp = #"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#
    static let threadColumns = """
        id, owner, title, metadata::text AS metadata, \
        to_char(created_at AT TIME ZONE 'UTC', \(timestamp)) AS created, \
        to_char(updated_at AT TIME ZONE 'UTC', \(timestamp)) AS updated
        """
    static let messageColumns = """
        id, thread_id, run_id, role, content, status, metadata::text AS metadata, \
        to_char(created_at AT TIME ZONE 'UTC', \(timestamp)) AS created
        """
    static let messageByID = "SELECT \(messageColumns) FROM messages WHERE id = $1::uuid"
    static let runColumns = """
        id, thread_id, status, assistant_message_id, error_code, error_message, \
        to_char(created_at AT TIME ZONE 'UTC', \(timestamp)) AS created, \
        to_char(updated_at AT TIME ZONE 'UTC', \(timestamp)) AS updated
        """

    struct CorruptRow: Error {
        let column: String
    }

    static func uuid(_ row: PostgresRow, _ column: String) throws -> UUID {
        guard let text = row[column], let id = UUID(uuidString: text) else { throw CorruptRow(column: column) }
        return id
    }

    static func text(_ row: PostgresRow, _ column: String) throws -> String {
        guard let text = row[column] else { throw CorruptRow(column: column) }
        return text
    }

    static func json(_ row: PostgresRow, _ column: String) -> JSONValue {
        guard let text = row[column], let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return .object([:]) }
        return value
    }

    static func thread(_ row: PostgresRow) throws -> ChatThread {
        ChatThread(
            id: try uuid(row, "id"), owner: try text(row, "owner"), title: row["title"], metadata: json(row, "metadata"),
            createdAt: try text(row, "created"), updatedAt: try text(row, "updated")
        )
    }

    static func message(_ row: PostgresRow) throws -> ChatMessage {
        guard let role = MessageRole(rawValue: try text(row, "role")) else { throw CorruptRow(column: "role") }
        return ChatMessage(
            id: try uuid(row, "id"), threadID: try uuid(row, "thread_id"), runID: row["run_id"].flatMap(UUID.init(uuidString:)),
            role: role, content: try text(row, "content"), status: try text(row, "status"), metadata: json(row, "metadata"),
            createdAt: try text(row, "created")
        )
    }

    static func run(_ row: PostgresRow) throws -> ChatRun {
        guard let status = RunStatus(rawValue: try text(row, "status")) else { throw CorruptRow(column: "status") }
        let error = row["error_code"].map { ErrorDetail(code: $0, message: row["error_message"] ?? "") }
        return ChatRun(
            id: try uuid(row, "id"), threadID: try uuid(row, "thread_id"), status: status,
            assistantMessageID: try uuid(row, "assistant_message_id"), error: error,
            createdAt: try text(row, "created"), updatedAt: try text(row, "updated")
        )
    }
}

extension JSONValue {
    /// Compact JSON text, for jsonb parameters.
    var jsonText: String {
        guard let data = try? JSONEncoder().encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
