#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Test data committed under Tests/Fixtures (made by scripts/make_*_fixtures.py).
public enum Fixtures {
    /// Absolute path of `Tests/Fixtures/<relative>`, found from this source file so tests run from any directory.
    public static func path(_ relative: String) -> String {
        let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        return testsDirectory.appendingPathComponent("Fixtures").appendingPathComponent(relative).path
    }

    /// Absolute path of `<repository>/<relative>` (the bundled model lives in models/).
    public static func repositoryPath(_ relative: String) -> String {
        URL(fileURLWithPath: path("")).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(relative).path
    }

    public static func data(_ relative: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: path(relative)))
    }
}
