import Foundation
import Hummingbird
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
@testable import PunicaServer
import Testing

/// `ConnectionGuard` in the pipeline Hummingbird builds (NIO's HTTP/1 codec, then HTTP types), on an embedded channel
/// whose clock the test advances.
struct GuardedConnection {
    let channel = EmbeddedChannel()
    let connections = Connections()
    var limits = HTTPLimits()

    init(configure: (inout HTTPLimits) -> Void = { _ in }) throws {
        configure(&limits)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try channel.pipeline.syncOperations.addHandler(ConnectionGuard(limits: limits, connections: connections))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
    }

    func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

    func advance(_ duration: Duration) { channel.embeddedEventLoop.advanceTime(by: TimeAmount(duration)) }

    /// Everything the server wrote, as text.
    func written() throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case let .byteBuffer(buffer) = data { text += String(buffer: buffer) }
        }
        return text
    }

    /// The request parts that reached the application.
    func received() throws -> [HTTPRequestPart] {
        var parts: [HTTPRequestPart] = []
        while let part = try channel.readInbound(as: HTTPRequestPart.self) { parts.append(part) }
        return parts
    }

    func respond(_ headers: HTTPFields = [:]) throws {
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok, headerFields: headers)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
    }

    var isOpen: Bool { channel.isActive }
}

@Suite struct ConnectionGuardTests {
    let millisecond = Duration.milliseconds(1)

    @Test func silentConnectionIsClosedAfterTheIdleTimeout() throws {
        let connection = try GuardedConnection()
        connection.advance(connection.limits.idleTimeout - millisecond)
        #expect(connection.isOpen)
        connection.advance(millisecond * 2)
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts == [.idleTimeout: 1])
    }

    /// The header clock starts at the request's first byte, and is far shorter than the idle timeout.
    @Test func slowHeadersGet408AfterTheHeaderTimeout() throws {
        let connection = try GuardedConnection()
        connection.advance(.seconds(5))
        try connection.send("GET /health HTTP/1.1\r\nHost: x\r\n")
        connection.advance(connection.limits.headerTimeout - millisecond)
        try connection.send("X-Slow: 1\r\n")
        #expect(connection.isOpen)
        connection.advance(millisecond * 2)
        let response = try connection.written()
        #expect(response.hasPrefix("HTTP/1.1 408 Request Timeout\r\n") && response.lowercased().contains("connection: close"), "\(response)")
        #expect(response.contains(#""code":"request_timeout""#))
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts == [.headerTimeout: 1])
        #expect(try connection.received().isEmpty)
    }

    /// A body that stops short reaches its reader as `BodyTimeoutError`; the reader's 408 closes the connection.
    @Test func bodyShortOfItsLengthFailsItsReaderAfterTheBodyTimeout() throws {
        let connection = try GuardedConnection()
        try connection.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        #expect(try connection.received().count == 2)  // head, the 5 bytes
        connection.advance(connection.limits.bodyTimeout - millisecond)
        #expect(throws: Never.self) { try connection.channel.throwIfErrorCaught() }
        connection.advance(millisecond * 2)
        #expect(throws: BodyTimeoutError.self) { try connection.channel.throwIfErrorCaught() }
        #expect(APIError(BodyTimeoutError(limit: connection.limits.bodyTimeout)).status == .requestTimeout)
        #expect(connection.isOpen)
        try connection.respond([.connection: "close"])
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts == [.bodyTimeout: 1])
    }

    @Test func bodyTimeoutClosesEvenWhenNothingAnswers() throws {
        let connection = try GuardedConnection()
        try connection.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        connection.advance(connection.limits.bodyTimeout + ConnectionGuard.lingerTime.duration + millisecond)
        #expect(!connection.isOpen)
    }

    @Test func malformedHeadGetsOpenAIs400AndIsClosed() throws {
        let connection = try GuardedConnection()
        try connection.send("GET /health HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        let response = try connection.written()
        #expect(response.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(response)")
        let body = try #require(response.components(separatedBy: "\r\n\r\n").last)
        let error = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: [String: Any]])["error"]
        #expect(error?["code"] as? String == "malformed_request")
        #expect((error?["message"] as? String)?.contains("HTTPParserError") == false)
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts == [.malformedRequest: 1])
    }

    /// A keep-alive response keeps the connection (idle clock restarted); one that says `Connection: close` ends it.
    @Test func connectionCloseResponsesEndTheConnection() throws {
        let connection = try GuardedConnection()
        try connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.advance(connection.limits.idleTimeout * 2)  // responding: no read clock runs
        try connection.respond()
        #expect(connection.isOpen)
        connection.advance(connection.limits.idleTimeout - millisecond)
        #expect(connection.isOpen)
        try connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try connection.respond([.connection: "close"])
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts.isEmpty)
    }

    @Test func clientThatStopsReadingIsClosedAfterTheSendTimeout() throws {
        let connection = try GuardedConnection()
        try connection.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        connection.advance(connection.limits.sendTimeout - millisecond)
        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        connection.advance(connection.limits.sendTimeout)
        #expect(connection.isOpen)
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        connection.advance(connection.limits.sendTimeout + millisecond)
        #expect(!connection.isOpen)
        #expect(connection.connections.closedCounts == [.sendStalled: 1])
    }

    @Test func shutdownDeadlineClosesEveryOpenConnection() throws {
        let first = try GuardedConnection(), second = try GuardedConnection()
        let connections = Connections()
        connections.opened(first.channel)
        connections.opened(second.channel)
        #expect(connections.closeAll() == 2)
        first.channel.embeddedEventLoop.run()
        second.channel.embeddedEventLoop.run()
        #expect(!first.isOpen && !second.isOpen)
        #expect(connections.closedCounts == [.shutdownDeadline: 2])
    }
}

extension TimeAmount {
    var duration: Duration { .nanoseconds(nanoseconds) }
}
