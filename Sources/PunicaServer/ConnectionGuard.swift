import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// How long a client may take, and how much the server holds for it. Semantics:
///   - idle: a connection with no request in progress is closed after `idleTimeout` without receiving a byte;
///   - header: a request's head (request line and headers) must be complete within `headerTimeout` of its first
///     byte; else 408 and the connection is closed;
///   - body: its body must be complete within `bodyTimeout` of its head; else 408 and the connection is closed;
///   - send: a connection whose send buffer stays full for `sendTimeout` (a client that stopped reading) is closed,
///     which cancels its request in the engine;
///   - the send buffer holds at most `sendBufferBytes` in the kernel (SO_SNDBUF) and as much again in the server;
///   - on SIGTERM/SIGINT, connections still open after `shutdownTimeout` are closed.
public struct HTTPLimits: Sendable, Equatable {
    public var idleTimeout: Duration = .seconds(60)
    public var headerTimeout: Duration = .seconds(10)
    public var bodyTimeout: Duration = .seconds(60)
    public var sendTimeout: Duration = .seconds(30)
    public var sendBufferBytes = 64 << 10
    public var shutdownTimeout: Duration = .seconds(30)

    public init() {}
}

/// Why the server closed a connection itself (not counting responses that say `Connection: close`).
enum ConnectionCloseReason: String, CaseIterable, Sendable {
    case idleTimeout = "idle_timeout"
    case headerTimeout = "header_timeout"
    case bodyTimeout = "body_timeout"
    case sendStalled = "send_stalled"
    case malformedRequest = "malformed_request"
    case shutdownDeadline = "shutdown_deadline"
}

/// The body did not arrive within `HTTPLimits.bodyTimeout`: thrown to whatever reads the request body.
struct BodyTimeoutError: Error {
    let limit: Duration
}

/// The open connections (so that shutdown can close those left at its deadline) and how many the server closed, by
/// reason. Shared by every connection's `ConnectionGuard`.
final class Connections: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var closed: [ConnectionCloseReason: Int] = [:]
    }
    private let state = NIOLockedValueBox(State())

    func opened(_ channel: any Channel) { state.withLockedValue { $0.open[ObjectIdentifier(channel)] = channel } }

    func ended(_ channel: any Channel) { _ = state.withLockedValue { $0.open.removeValue(forKey: ObjectIdentifier(channel)) } }

    func closed(_ reason: ConnectionCloseReason) { state.withLockedValue { $0.closed[reason, default: 0] += 1 } }

    var closedCounts: [ConnectionCloseReason: Int] { state.withLockedValue { $0.closed } }

    /// Closes every open connection; returns how many there were.
    func closeAll() -> Int {
        let channels = state.withLockedValue { state in
            state.closed[.shutdownDeadline, default: 0] += state.open.count
            return Array(state.open.values)
        }
        for channel in channels { channel.close(promise: nil) }
        return channels.count
    }
}

/// Enforces `HTTPLimits` on one HTTP/1 connection; sits between NIO's HTTP codec and Hummingbird's handlers, and puts
/// a small `InboundBytes` handler at the pipeline's front to see a request's first byte before any HTTP part exists.
///
/// Also: a response that says `Connection: close` closes the connection once sent (output first, then all once the
/// client closes or after `lingerTime`, so the client reads the response rather than a reset while its unread body is
/// still arriving); a request head the HTTP parser refuses is answered with OpenAI's 400 error body (a malformed
/// body reaches the route that reads it, which answers 400 itself).
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How long a connection stays half-closed after its last response before it is closed for good.
    static let lingerTime: TimeAmount = .seconds(2)

    private enum Reading { case nothing, head, body }
    private enum Timer { case idle, header, body, linger }

    private let limits: HTTPLimits
    private let connections: Connections
    private var reading = Reading.nothing
    /// Requests whose head has arrived and whose response has not ended.
    private var responding = 0
    private var closeAfterResponse = false
    private var outputClosed = false
    private var opened = false
    /// This handler's context, for timers that `InboundBytes` starts.
    private var context: ChannelHandlerContext?
    private var timer: (kind: Timer, task: Scheduled<Void>)?
    private var stallTimer: Scheduled<Void>?

    init(limits: HTTPLimits, connections: Connections) {
        self.limits = limits
        self.connections = connections
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        try? context.pipeline.syncOperations.addHandler(InboundBytes(owner: self), position: .first)
        let bytes = limits.sendBufferBytes
        try? context.channel.syncOptions?.setOption(ChannelOptions.socketOption(.so_sndbuf), value: SocketOptionValue(bytes))
        try? context.channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: bytes / 2, high: bytes))
        if context.channel.isActive { open(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        open(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        connections.ended(context.channel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
        self.context = nil
    }

    private func open(_ context: ChannelHandlerContext) {
        guard !opened else { return }
        opened = true
        connections.opened(context.channel)
        schedule(.idle, after: limits.idleTimeout, context)
    }

    /// Bytes arrived (seen by `InboundBytes` before the HTTP decoder): the first byte of a request starts its header clock.
    fileprivate func bytesArrived() {
        if let context, reading == .nothing && responding == 0 && timer?.kind == .idle {
            reading = .head
            schedule(.header, after: limits.headerTimeout, context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            reading = .body
            responding += 1
            schedule(.body, after: limits.bodyTimeout, context)
        case .body:
            break
        case .end:
            reading = .nothing
            cancelReadTimer()
            if responding == 0 { schedule(.idle, after: limits.idleTimeout, context) }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case let .head(head):
            if head.headerFields[.connection]?.lowercased() == "close" { closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            responding -= 1
            context.writeAndFlush(data, promise: promise)
            if closeAfterResponse {
                closeOutput(context)
            } else if responding == 0 && reading == .nothing {
                schedule(.idle, after: limits.idleTimeout, context)
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stallTimer?.cancel()
            stallTimer = nil
        } else if stallTimer == nil {
            stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(limits.sendTimeout)) {
                self.stallTimer = nil
                self.connections.closed(.sendStalled)
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A head the parser refuses never reaches a route: answer it here. Later errors go to the route or to Hummingbird.
        if let error = error as? HTTPParserError, reading != .body && responding == 0 && !outputClosed {
            connections.closed(.malformedRequest)
            respondAndClose(.malformedHTTP("Malformed HTTP request: \(error.debugDescription)."), context)
            return
        }
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client closed its side after ours: nothing is left to read or write.
        if case .inputClosed? = event as? ChannelEvent, outputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func timerFired(_ kind: Timer, _ context: ChannelHandlerContext) {
        timer = nil
        switch kind {
        case .idle:
            connections.closed(.idleTimeout)
            context.close(promise: nil)
        case .header:
            connections.closed(.headerTimeout)
            respondAndClose(.requestTimeout("The request's headers did not arrive within \(limits.headerTimeout.secondsText)."), context)
        case .body:
            connections.closed(.bodyTimeout)
            guard responding > 0 && !outputClosed else {
                context.close(promise: nil)
                return
            }
            // Whatever reads the body gets the error and answers 408 (`Connection: close`); if nothing answers, linger ends it.
            closeAfterResponse = true
            schedule(.linger, after: Self.lingerTime, context)
            context.fireErrorCaught(BodyTimeoutError(limit: limits.bodyTimeout))
        case .linger:
            context.close(promise: nil)
        }
    }

    /// Writes OpenAI's error response (no request reached a route) and closes.
    private func respondAndClose(_ error: APIError, _ context: ChannelHandlerContext) {
        let body = jsonBuffer(error.body)
        let head = HTTPResponse(status: error.status, headerFields: [.contentType: "application/json", .contentLength: String(body.readableBytes),
                                                                     .connection: "close"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        closeOutput(context)
    }

    /// Half-closes once pending writes are sent; the connection closes when the client closes, or after `lingerTime`.
    private func closeOutput(_ context: ChannelHandlerContext) {
        guard !outputClosed else { return }
        outputClosed = true
        cancelReadTimer()
        context.close(mode: .output, promise: nil)
        schedule(.linger, after: Self.lingerTime, context)
    }

    private func schedule(_ kind: Timer, after delay: Duration, _ context: ChannelHandlerContext) {
        schedule(kind, after: TimeAmount(delay), context)
    }

    private func schedule(_ kind: Timer, after delay: TimeAmount, _ context: ChannelHandlerContext) {
        guard !outputClosed || kind == .linger else { return }
        cancelReadTimer()
        timer = (kind, context.eventLoop.assumeIsolated().scheduleTask(in: delay) { self.timerFired(kind, context) })
    }

    private func cancelReadTimer() {
        timer?.task.cancel()
        timer = nil
    }

    private func cancelTimers() {
        cancelReadTimer()
        stallTimer?.cancel()
        stallTimer = nil
    }
}

extension Duration {
    /// "2.5 s"
    var secondsText: String { "\(seconds == seconds.rounded() && seconds < 1e15 ? String(Int(seconds)) : String(seconds)) s" }
}

/// Tells its `ConnectionGuard` when bytes arrive, before the HTTP decoder turns them into parts.
private final class InboundBytes: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let owner: ConnectionGuard

    init(owner: ConnectionGuard) {
        self.owner = owner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner.bytesArrived()
        context.fireChannelRead(data)
    }
}
