#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch

/// The terminal for a full-screen view: alternate screen, hidden cursor, keys read one at a time without echo
/// (Ctrl-C arrives as a key). `restore()` puts everything back; the termination signals (TERM, HUP, INT) restore it
/// before exiting, so a killed demo leaves a usable terminal too.
final class RawTerminal {
    private var original = termios()
    /// False when stdin is not a terminal: the view still draws, but reads no keys.
    private let ownsKeyboard: Bool
    private static let terminationSignals = [SIGTERM, SIGHUP, SIGINT]
    private var signalSources: [DispatchSourceSignal] = []
    private var restored = false

    init() {
        ownsKeyboard = tcgetattr(STDIN_FILENO, &original) == 0
        if ownsKeyboard {
            var raw = original
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG)
            tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        }
        emit("\u{1B}[?1049h\u{1B}[?25l\u{1B}[2J")
        for signalNumber in Self.terminationSignals {
            signal(signalNumber, SIG_IGN)  // delivered to the source below instead of killing the process
            let source = DispatchSource.makeSignalSource(signal: signalNumber)
            source.setEventHandler { [unowned self] in
                restore()
                exit(128 + signalNumber)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    func restore() {
        guard !restored else { return }
        restored = true
        signalSources.forEach { $0.cancel() }
        Self.terminationSignals.forEach { signal($0, SIG_DFL) }
        emit("\u{1B}[0m\u{1B}[?25h\u{1B}[?1049l")
        if ownsKeyboard { tcsetattr(STDIN_FILENO, TCSANOW, &original) }
    }

    /// Columns and rows of the window now (it may have been resized).
    var size: (columns: Int, rows: Int) {
        var window = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0, window.ws_row > 0 else { return (80, 24) }
        return (Int(window.ws_col), Int(window.ws_row))
    }

    /// Bytes typed since the last call, without waiting.
    func pendingKeys() -> [UInt8] {
        guard ownsKeyboard else { return [] }
        var keys: [UInt8] = []
        var descriptor = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 64)
        while poll(&descriptor, 1, 0) > 0 {
            let count = read(STDIN_FILENO, &buffer, buffer.count)
            guard count > 0 else { break }
            keys += buffer[..<count]
        }
        return keys
    }

    func emit(_ text: String) {
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            guard count > 0 else { return }
            written += count
        }
    }
}
