import RedisClient
import Testing

@testable import HeraldCore

@Suite("configuration: Redis (TLS, cluster), TLS to engines and on the listener")
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

    @Test("a Redis Cluster from REDIS_CLUSTER_NODES or a redis+cluster:// URL; TLS settings with rediss+cluster://")
    func cluster() throws {
        let seeds = try HeraldConfiguration.fromEnvironment(["HERALD_INSECURE_DEV": "1", "REDIS_CLUSTER_NODES": "10.0.0.1:7001,10.0.0.2:7002"])
        #expect(seeds.redisURL == "redis+cluster://10.0.0.1:7001,10.0.0.2:7002")
        #expect(try RedisDeployment(url: seeds.redisURL).isCluster)
        let secure = try HeraldConfiguration.fromEnvironment([
            "HERALD_INSECURE_DEV": "1", "REDIS_URL": "rediss+cluster://:pw@a:7001,b:7002", "REDIS_TLS_CA_FILE": "/etc/ca.pem",
        ])
        #expect(secure.redisTLS.caFile == "/etc/ca.pem")
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
        (["REDIS_URL": "redis://h", "REDIS_CLUSTER_NODES": "a:7001"], "REDIS_CLUSTER_NODES"),
        (["REDIS_CLUSTER_NODES": "a:7001,b:notaport"], "REDIS_URL"),
        (["REDIS_URL": "redis+cluster://a:7001/2"], "REDIS_URL"),
        (["REDIS_URL": "redis+cluster://a:7001", "REDIS_TLS_CA_FILE": "/etc/ca.pem"], "REDIS_URL"),
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
