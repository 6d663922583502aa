import Hummingbird
import NIOHTTP1
@testable import PunicaServer
import Testing

/// The one error → HTTP mapping, for errors that come from the connection rather than from a route's own checks.
@Suite struct ErrorMappingTests {
    @Test func malformedHTTPBodyIs400AndClosesTheConnection() {
        let error = APIError(HTTPParserError.invalidChunkSize)
        #expect(error.status == .badRequest && error.closesConnection)
        #expect(error.body.error.code == "malformed_request")
        #expect(error.body.error.message == "Malformed HTTP request body: invalid character in chunk size header.")
        #expect(error.response.headers[.connection] == "close")
    }

    @Test func bodyTimeoutIs408AndClosesTheConnection() {
        let error = APIError(BodyTimeoutError(limit: .milliseconds(1500)))
        #expect(error.status == .requestTimeout && error.closesConnection)
        #expect(error.body.error.message == "The request body did not arrive within 1.5 s.")
    }

    /// An unclassified error's detail (Swift types, server paths) goes to the log only.
    @Test func internalErrorsKeepTheirDetailFromTheClient() {
        struct Unexpected: Error { let path = "/srv/secret/adapter_model.safetensors" }
        let error = APIError(Unexpected())
        #expect(error.status == .internalServerError && !error.closesConnection)
        #expect(error.description.contains("/srv/secret"))
        #expect(!error.body.error.message.contains("/srv/secret") && !error.body.error.message.contains("Unexpected"))
    }

    @Test func otherClientErrorsKeepHummingbirdsStatus() {
        let error = APIError(HTTPError(.methodNotAllowed))
        #expect(error.status == .methodNotAllowed && error.body.error.code == "http_error")
    }
}
