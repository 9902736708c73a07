import RedisClient
import Testing

@Suite struct RedisConfigurationTests {
    @Test func parsesURLs() throws {
        #expect(try RedisConfiguration(url: "redis://localhost") == RedisConfiguration(host: "localhost"))
        #expect(try RedisConfiguration(url: "REDIS://cache.internal") == RedisConfiguration(host: "cache.internal"))
        #expect(
            try RedisConfiguration(url: "redis://10.0.0.5:6380/3")
                == RedisConfiguration(host: "10.0.0.5", port: 6380, database: 3)
        )
        #expect(
            try RedisConfiguration(url: "redis://:s3cret@redis:1234")
                == RedisConfiguration(host: "redis", port: 1234, password: "s3cret")
        )
        #expect(
            try RedisConfiguration(url: "redis://alice:p%40ss%3Aw%C3%B6rd@h/0")
                == RedisConfiguration(host: "h", username: "alice", password: "p@ss:wörd")
        )
        #expect(try RedisConfiguration(url: "redis://[::1]:7000/") == RedisConfiguration(host: "::1", port: 7000))
        #expect(try RedisConfiguration(url: "redis://[::1]") == RedisConfiguration(host: "::1"))
        #expect(
            try RedisConfiguration(url: "rediss://:secret@cache.example.com:6380/2")
                == RedisConfiguration(host: "cache.example.com", port: 6380, password: "secret", database: 2, tls: .init())
        )
        #expect(try RedisConfiguration(url: "REDISS://h").tls?.verifiesServer == true)
    }

    @Test(arguments: [
        "", "http://localhost", "redisss://localhost", "rediss:/localhost", "redis://", "redis://:6379", "redis://host:", "redis://host:0",
        "redis://host:65536", "redis://host:12ab", "redis://host/x", "redis://host/-1", "redis://user@host",
        "redis://user:@host", "redis://host?db=1", "redis://:%zz@host", "redis://[::1", "redis://[::1]x",
    ])
    func rejectsBadURLs(_ url: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        guard case .invalidURL(let reason)? = error else {
            Issue.record("expected invalidURL, got \(String(describing: error))")
            return
        }
        #expect(!reason.isEmpty)
    }

    @Test("the endpoint as logged: no credentials, and how TLS is checked")
    func endpointDescription() throws {
        #expect(try RedisConfiguration(url: "redis://:secret@cache:6380/2").endpointDescription == "redis://cache:6380/2")
        var managed = try RedisConfiguration(url: "rediss://user:secret@redis.example.com:6380")
        #expect(managed.endpointDescription == "rediss://redis.example.com:6380/0 (TLS, verified against the system's trust store)")
        managed.tls?.caFile = "/etc/herald/redis-ca.pem"
        #expect(managed.endpointDescription == "rediss://redis.example.com:6380/0 (TLS, verified against /etc/herald/redis-ca.pem)")
        managed.tls?.verifiesServer = false
        #expect(!managed.endpointDescription.contains("secret"))
        #expect(managed.endpointDescription.hasSuffix("(TLS, NOT verified)"))
    }

    @Test func scriptSHA1MatchesKnownVectors() {
        #expect(RedisScript("").sha1 == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(RedisScript("abc").sha1 == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            RedisScript("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").sha1
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        )
        #expect(RedisScript(String(repeating: "a", count: 1000)).sha1 == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
        #expect(RedisScript("héllo ✓").sha1 == "b7c2a1aa52961195ac19331417a20a8b4f202ddb")
    }
}
