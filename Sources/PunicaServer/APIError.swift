#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import NIOHTTP1
import PunicaEngine

/// Every way an API request fails. `init(_:)` and `status` are the one place errors become HTTP statuses and
/// OpenAI's `{"error": {"message", "type", "param", "code"}}` body.
enum APIError: Error, Equatable, CustomStringConvertible {
    /// A field is missing, malformed or out of its limits; `param` names it.
    case invalid(param: String?, message: String)
    case modelNotFound(String)
    case adapterNotFound(String)
    case routeNotFound
    case unauthorized
    /// `lora_path` does not exist, lies outside the adapter roots, or a file in it resolves outside them: one answer
    /// for all, so that a client learns nothing about paths outside the roots. `rootsConfigured` false: loading is off.
    case pathNotAllowed(String, rootsConfigured: Bool)
    case bodyTooLarge(limit: Int)
    /// The HTTP framing itself is malformed (a bad chunk size, say): the connection cannot be read further.
    case malformedHTTP(String)
    /// The request's headers or body did not arrive in time.
    case requestTimeout(String)
    /// A status Hummingbird chose (405, say).
    case http(HTTPResponse.Status)
    case adapterInUse(String, requests: Int)
    case queueFull(limit: Int)
    case shuttingDown
    /// The engine accepted the request but could not finish it.
    case generationFailed(String)
    case internalError(String)

    /// Classifies any error a route throws.
    init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as RequestError:
            switch error {
            case let .invalid(field, reason): self = .invalid(param: field, message: "`\(field)` \(reason)")
            case let .unknownAdapter(name, _): self = .modelNotFound(name)
            case let .adapterInUse(name, requests): self = .adapterInUse(name, requests: requests)
            case let .queueFull(limit): self = .queueFull(limit: limit)
            case .shuttingDown: self = .shuttingDown
            }
        case let error as ChatTemplateError:
            self = .invalid(param: "messages", message: error.description)
        case let error as DecodingError:
            self = Self.invalidJSON(error)
        case let error as HTTPParserError:
            self = .malformedHTTP("Malformed HTTP request body: \(error.debugDescription).")
        case let error as BodyTimeoutError:
            self = .requestTimeout("The request body did not arrive within \(error.limit.secondsText).")
        case let error as any HTTPResponseError where error.status == .notFound:
            self = .routeNotFound
        case let error as any HTTPResponseError where (400..<500).contains(error.status.code):
            self = .http(error.status)
        default:
            self = .internalError(String(describing: error))
        }
    }

    var status: HTTPResponse.Status {
        switch self {
        case .invalid: .badRequest
        case .modelNotFound, .adapterNotFound, .routeNotFound: .notFound
        case .unauthorized: .unauthorized
        case .pathNotAllowed: .forbidden
        case .bodyTooLarge: .contentTooLarge
        case .malformedHTTP: .badRequest
        case .requestTimeout: .requestTimeout
        case let .http(status): status
        case .adapterInUse: .conflict
        case .queueFull: .tooManyRequests
        case .shuttingDown: .serviceUnavailable
        case .generationFailed, .internalError: .internalServerError
        }
    }

    var description: String {
        switch self {
        case let .invalid(_, message): message
        case let .modelNotFound(name): "The model `\(name)` does not exist; GET /v1/models lists the served models."
        case let .adapterNotFound(name): "The LoRA adapter `\(name)` is not loaded; GET /v1/models lists the served models."
        case .routeNotFound: "No such route: the API is POST /v1/completions, POST /v1/chat/completions, GET /v1/models."
        case .unauthorized: "Missing or incorrect API key: send it as `Authorization: Bearer <key>`."
        case let .pathNotAllowed(path, rootsConfigured):
            rootsConfigured
                ? "`lora_path` \(path) is not an allowed adapter path: an existing directory inside the server's adapter roots, "
                    + "whose files resolve inside them."
                : "Loading adapters at run time is disabled; start the server with --adapter-root DIR."
        case let .bodyTooLarge(limit): "The request body is larger than the limit of \(limit) bytes."
        case let .malformedHTTP(message), let .requestTimeout(message): message
        case let .http(status): "\(status.code) \(status.reasonPhrase)"
        case let .adapterInUse(name, requests):
            "The LoRA adapter `\(name)` is in use by \(requests) request(s); unload it when they finish."
        case let .queueFull(limit): "The server is busy (\(limit) requests waiting); retry later."
        case .shuttingDown: "The server is shutting down."
        case let .generationFailed(message): "Generation failed: \(message)"
        case let .internalError(message): "Internal error: \(message)"
        }
    }

    /// What the client reads: `description`, except that an internal error's detail (which may name Swift types or
    /// server paths) stays in the server's log.
    var message: String {
        if case .internalError = self { return "Internal server error; the server's log has the details." }
        return description
    }

    /// Errors after which the rest of the request cannot be read: the response closes the connection.
    var closesConnection: Bool {
        switch self {
        case .bodyTooLarge, .malformedHTTP, .requestTimeout: true
        default: false
        }
    }

    /// The body OpenAI sends with an error status.
    var body: ErrorBody {
        let type = switch status {
        case .unauthorized: "authentication_error"
        case .forbidden: "permission_error"
        case .tooManyRequests: "rate_limit_error"
        case .internalServerError, .serviceUnavailable: "server_error"
        default: "invalid_request_error"
        }
        let (param, code): (String?, String) = switch self {
        case let .invalid(param, _): (param, "invalid_value")
        case .modelNotFound: ("model", "model_not_found")
        case .adapterNotFound: ("lora_name", "adapter_not_found")
        case .routeNotFound: (nil, "not_found")
        case .unauthorized: (nil, "invalid_api_key")
        case .pathNotAllowed: ("lora_path", "path_not_allowed")
        case .bodyTooLarge: (nil, "body_too_large")
        case .malformedHTTP: (nil, "malformed_request")
        case .requestTimeout: (nil, "request_timeout")
        case .http: (nil, "http_error")
        case .adapterInUse: ("lora_name", "adapter_in_use")
        case .queueFull: (nil, "queue_full")
        case .shuttingDown: (nil, "shutting_down")
        case .generationFailed: (nil, "generation_failed")
        case .internalError: (nil, "internal_error")
        }
        return ErrorBody(error: .init(message: message, type: type, param: param, code: code))
    }

    /// A 400 naming the field a JSON body got wrong, in words of JSON (never the decoder's own text, which names
    /// Swift types).
    private static func invalidJSON(_ error: DecodingError) -> APIError {
        func invalid(_ field: String?, _ rule: String) -> APIError {
            .invalid(param: field, message: "Invalid JSON body: " + (field.map { "`\($0)` \(rule)" } ?? rule))
        }
        /// `messages[0].content`
        func path(_ codingPath: [any CodingKey]) -> String? {
            guard !codingPath.isEmpty else { return nil }
            return codingPath.reduce("") { path, key in
                key.intValue.map { path + "[\($0)]" } ?? (path.isEmpty ? key.stringValue : path + "." + key.stringValue)
            }
        }
        switch error {
        case let .keyNotFound(key, context):
            return invalid(path(context.codingPath + [key]) ?? key.stringValue, "is required")
        case let .typeMismatch(type, context), let .valueNotFound(type, context):
            guard let field = path(context.codingPath) else { return invalid(nil, "the body must be a JSON object") }
            return invalid(field, "must be \(jsonTypeName(type))")
        case let .dataCorrupted(context):
            let field = path(context.codingPath)
            // Our own rules (`FieldRule`) say what the field must be. The decoder refuses text that is no JSON, and
            // (on Linux, without a path) numbers that do not fit their field's type.
            if let rule = context.underlyingError as? FieldRule { return invalid(field, rule.text) }
            return field.map { invalid($0, "is out of range, or not of the expected kind") } ?? invalid(nil, "the body is not valid JSON, or a number in it does not fit its field")
        @unknown default:
            return invalid(nil, "the body cannot be read")
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type, is UInt64.Type: "an integer"
        case is Float.Type, is Double.Type: "a number"
        case is [Any].Type: "an array"
        default: "an object"
        }
    }
}

/// What a field must be, when a request's decoder refuses it: `FieldRule.error("must be a string", decoder)`.
struct FieldRule: Error {
    let text: String

    static func error(_ text: String, _ decoder: any Decoder) -> DecodingError {
        .dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: text, underlyingError: FieldRule(text: text)))
    }
}

struct ErrorBody: Encodable {
    struct Detail: Encodable {
        let message: String
        let type: String
        @EncodedAsNull var param: String?
        let code: String
    }
    let error: Detail
}

extension APIError: HTTPResponseError {
    var response: Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if closesConnection { headers[.connection] = "close" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: jsonBuffer(body)))
    }

    func response(from request: Request, context: some RequestContext) throws -> Response { response }
}

/// Turns every error a route throws into OpenAI's error response, and logs it.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let apiError = APIError(error)
            let level: Logger.Level = apiError.status.code >= 500 ? .error : .info
            context.logger.log(level: level, "\(request.method) \(request.uri.path) → \(apiError.status.code): \(apiError)")
            return apiError.response
        }
    }
}
