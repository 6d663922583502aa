import Hummingbird

/// Requires `Authorization: Bearer <key>` on the routes it guards.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer "),
              constantTimeEqual(Array(authorization.utf8.dropFirst("Bearer ".utf8.count)), Array(key.utf8)) else {
            throw APIError.unauthorized
        }
        return try await next(request, context)
    }
}

/// Compares every byte whatever the first difference, so the time taken does not reveal how much of a guess is right.
private func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
}
