import Hummingbird
import Logging

/// One debug line per request with its route pattern, status and duration, under the request's logger (so with
/// its `hb.request.id`). Hummingbird's `LogRequestsMiddleware` logs the whole URI, query included, which would
/// put `access_token` and callback tokens into the logs.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard context.logger.logLevel <= .debug else { return try await next(request, context) }
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            log(request, context: context, status: Int(response.status.code), start: start)
            return response
        } catch {
            log(request, context: context, status: Int((error as? any HTTPResponseError)?.status.code ?? 500), start: start)
            throw error
        }
    }

    private func log(_ request: Request, context: Context, status: Int, start: ContinuousClock.Instant) {
        Self.log(method: request.method, route: context.endpointPath ?? "NotFound", status: status, start: start, logger: context.logger)
    }

    /// The line, for requests answered without the router too (`WebhookRoute.answerNow`).
    static func log(method: HTTPRequest.Method, route: String, status: Int, start: ContinuousClock.Instant, logger: Logger) {
        guard logger.logLevel <= .debug else { return }
        let elapsed = ContinuousClock.now - start
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        logger.debug("request", metadata: [
            "method": .string(method.rawValue),
            "route": .string(route),
            "status": .stringConvertible(status),
            "duration_ms": .stringConvertible((milliseconds * 10).rounded() / 10),
        ])
    }
}
