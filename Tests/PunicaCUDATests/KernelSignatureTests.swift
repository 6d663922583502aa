import Foundation
@testable import PunicaCUDA
import Testing

/// Each launcher's `KernelParameters` struct matches its kernel's `extern "C"` signature in the .cu source: same
/// parameters, same order, same C types. A mismatch would pass garbage to the kernel; this catches it without a GPU.
@Suite struct KernelSignatureTests {
    @Test func everyParameterStructMatchesItsKernelSignature() throws {
        var checked = 0
        for file in KernelSources.files {
            let source = String(decoding: file.source, as: UTF8.self)
            let declared = Self.kernelSignatures(in: source)
            #expect(Set(declared.keys) == Set(file.kernels.map { $0.kernel }), "\(file.name): kernels and parameter structs differ")
            for parameters in file.kernels {
                guard let signature = declared[parameters.kernel] else { continue }
                let fields = Mirror(reflecting: parameters.init()).children.map { child in
                    (Self.snakeCase(child.label ?? "?"), "\(type(of: child.value))")
                }
                #expect(fields.map(\.0) == signature.map(\.name), "\(parameters.kernel): parameter names or order")
                #expect(fields.map(\.1) == signature.map(\.type), "\(parameters.kernel): parameter types")
                checked += 1
            }
        }
        #expect(checked == KernelSources.files.reduce(0) { $0 + $1.kernels.count })
    }

    /// Kernels launch with programmatic dependent launch (they may start while the previous kernel finishes), so each
    /// must wait for it before touching memory: its body starts with `wait_for_previous_kernel();`.
    @Test func everyKernelWaitsForThePreviousOneFirst() {
        for file in KernelSources.files {
            let source = String(decoding: file.source, as: UTF8.self)
            var rest = Substring(source)
            var kernels = 0
            while let start = rest.range(of: "extern \"C\" __global__ void ") {
                rest = rest[start.upperBound...]
                let name = rest[..<rest.firstIndex(of: "(")!]
                let body = rest[rest.range(of: ") {\n")!.upperBound...]
                #expect(body.drop(while: \.isWhitespace).hasPrefix("wait_for_previous_kernel();"), "\(file.name): \(name) must start with wait_for_previous_kernel()")
                kernels += 1
            }
            #expect(kernels == file.kernels.count, "\(file.name)")
        }
    }

    /// `extern "C" __global__ void name(int a, T* b, size_t c)` → name: [(a, "Int32"), (b, "UInt64"), (c, "UInt64")]: the
    /// Swift type each parameter's field must have.
    static func kernelSignatures(in source: String) -> [String: [(name: String, type: String)]] {
        var result: [String: [(name: String, type: String)]] = [:]
        var rest = Substring(source)
        while let start = rest.range(of: "extern \"C\" __global__ void ") {
            rest = rest[start.upperBound...]
            let open = rest.firstIndex(of: "(")!, close = rest.firstIndex(of: ")")!
            let name = rest[..<open].trimmingCharacters(in: .whitespaces)
            let parameters = rest[rest.index(after: open) ..< close].split(separator: ",").map { declaration in
                let words = declaration.replacingOccurrences(of: "*", with: " * ").split(whereSeparator: \.isWhitespace)
                    .filter { $0 != "const" && $0 != "__restrict__" }.map(String.init)
                let swiftTypes = ["int": "Int32", "float": "Float", "size_t": "UInt64", "unsigned long long": "UInt64"]
                let cType = words.dropLast().joined(separator: " ")
                return (name: words.last!, type: words.contains("*") ? "UInt64" : swiftTypes[cType] ?? cType)
            }
            result[name] = parameters
            rest = rest[close...]
        }
        return result
    }

    static func snakeCase(_ name: String) -> String {
        name.reduce(into: "") { result, character in
            result += character.isUppercase ? "_" + character.lowercased() : String(character)
        }
    }
}
