import Foundation
import HeraldCore
import Hummingbird
import NIOCore

/// Reading request bodies with the limits and errors every route shares.
enum RequestBody {
    /// The raw body, refused with 413 before it is read when `Content-Length` already says it is too large.
    static func bytes(of request: Request, limit: Int) async throws -> ByteBuffer {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            throw APIError(.contentTooLarge, "body_too_large", "request body exceeds \(limit) bytes")
        }
        do {
            var request = request
            return try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, "body_too_large", "request body exceeds \(limit) bytes")
        } catch is NIOTooManyBytesError {
            // A body already collected (by `RequestHandoff`) is measured by NIO's `collect`, which says so this way.
            throw APIError(.contentTooLarge, "body_too_large", "request body exceeds \(limit) bytes")
        }
    }

    /// A JSON object body for the client API: JSON content type (or none), valid JSON, an object.
    static func jsonObject(of request: Request, limit: Int, maxDepth: Int) async throws -> [String: JSONValue] {
        if let contentType = request.headers[.contentType]?.lowercased(),
           !(contentType.hasPrefix("application/json") || contentType.contains("+json")) {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "send the body as application/json")
        }
        let buffer = try await bytes(of: request, limit: limit)
        return try jsonObject(in: buffer, maxDepth: maxDepth, what: "request body")
    }

    /// `bytes` as a JSON object (`what` names them in the errors: "request body", "message").
    static func jsonObject(in bytes: ByteBuffer, maxDepth: Int, what: String) throws -> [String: JSONValue] {
        guard bytes.readableBytes > 0 else { throw APIError.badRequest("\(what) is empty; expected a JSON object") }
        guard !JSONDepth.exceeds(bytes.readableBytesView, limit: maxDepth) else {
            throw APIError.invalid("JSON nesting deeper than \(maxDepth) levels")
        }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes.readableBytesView))
        } catch {
            throw APIError.badRequest("\(what) is not valid JSON")
        }
        guard case .object(let object) = value else { throw APIError.invalid("\(what) must be a JSON object") }
        guard !value.containsNUL else { throw APIError.invalid("strings must not contain NUL characters") }
        return object
    }
}

/// Typed access to a decoded JSON object, with 422s that name the field.
struct Fields {
    let object: [String: JSONValue]

    /// Refuses fields the route does not know: a typo should fail loudly, not be silently ignored.
    init(object: [String: JSONValue], allowed: Set<String>) throws {
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError.invalid("unknown field \(unknown.debugDescription.prefix(64))")
        }
        self.object = object
    }

    func optionalString(_ key: String, maxBytes: Int) throws -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let text)?:
            guard text.utf8.count <= maxBytes else { throw APIError.invalid("\(key) exceeds \(maxBytes) bytes") }
            return text
        default: throw APIError.invalid("\(key) must be a string")
        }
    }

    /// A boolean; null or absent is nil, anything else (`"true"`, `1`) is refused.
    func optionalBool(_ key: String) throws -> Bool? {
        switch object[key] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw APIError.invalid("\(key) must be a boolean")
        }
    }

    /// A list of at most `max` UUIDs, duplicates dropped, in the order given. A string that is not a UUID is
    /// `invalid_id`, named by its position.
    func uuids(_ key: String, max: Int) throws -> [UUID] {
        guard case .array(let values)? = object[key] else { throw APIError.invalid("\(key) must be an array of ids") }
        guard values.count <= max else { throw APIError.invalid("\(key) holds \(values.count) ids; at most \(max) per request") }
        var ids: [UUID] = [], seen: Set<UUID> = []
        for (position, value) in values.enumerated() {
            guard case .string(let text) = value else { throw APIError.invalid("\(key)[\(position)] must be a string") }
            guard let id = UUID(text: text) else {
                throw APIError(.badRequest, "invalid_id", "\(key)[\(position)] is not a UUID: \(text.prefix(64).debugDescription)")
            }
            if seen.insert(id).inserted { ids.append(id) }
        }
        return ids
    }

    func metadata() throws -> JSONValue {
        switch object["metadata"] {
        case nil, .null?: return .object([:])
        case .object(let fields)?: return .object(fields)
        default: throw APIError.invalid("metadata must be a JSON object")
        }
    }
}

extension Parameters {
    /// A path UUID; anything else is refused before it reaches SQL or a Redis key.
    func uuid(_ name: String) throws -> UUID {
        guard let text = self.get(name), let id = UUID(text: text) else {
            throw APIError(.badRequest, "invalid_id", "\(name) must be a UUID")
        }
        return id
    }
}

extension Request {
    func queryInt(_ name: String, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = uri.queryParameters.get(name) else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw APIError.invalid("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }
}

/// JSON responses, encoded the same way everywhere.
enum JSONResponse {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()

    static func make(_ status: HTTPResponse.Status, _ value: some Encodable) throws -> Response {
        let data = try encoder.encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}
