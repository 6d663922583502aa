#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// A tensor inside a safetensors file. `bytes` stays valid while its file is alive.
public struct TensorData {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let bytes: UnsafeRawPointer
    /// The file that holds `bytes`; held so the memory outlives every use of the pointer.
    let file: SafeTensorsFile

    /// The product of `shape`; the header check guarantees it does not overflow.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Element `index` widened to float32.
    public func value(at index: Int) -> Float {
        switch dtype {
        case .float32: Float(bitPattern: bytes.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self))
        case .float16: HalfConversion.float(float16: bytes.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
        case .bfloat16: HalfConversion.float(bfloat16: bytes.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
        }
    }

    /// The first element that is NaN or ±∞. One such weight turns every logit it reaches into NaN, so checkpoints are
    /// scanned once at load. The exponent bits of a non-finite value are all ones; 8 bytes (2 or 4 elements) are tested
    /// at once: after `& mask ^ mask` such a lane is zero, which the borrow of `t - low` into its top bit reveals
    /// (exact for "some lane is zero", since no lane of t has its top bit set). Only a hit pays for finding the index.
    public func firstNonFinite() -> (index: Int, value: Float)? {
        let (lanes, mask): (Int, UInt64) = switch dtype {
        case .float32: (2, 0x7F80_0000_7F80_0000)
        case .float16: (4, 0x7C00_7C00_7C00_7C00)
        case .bfloat16: (4, 0x7F80_7F80_7F80_7F80)
        }
        let low: UInt64 = lanes == 2 ? 0x0000_0001_0000_0001 : 0x0001_0001_0001_0001
        let high = low << (64 / lanes - 1)
        let count = elementCount
        var first = count - count % lanes  // where a word-wise hit (or the tail) starts
        for word in 0 ..< count / lanes {
            let t = (bytes.loadUnaligned(fromByteOffset: 8 * word, as: UInt64.self) & mask) ^ mask
            if (t &- low) & ~t & high != 0 {
                first = word * lanes
                break
            }
        }
        return (first..<count).lazy.map { ($0, value(at: $0)) }.first { !$0.1.isFinite }
    }

    /// Throws naming the tensor's first element that breaks `rule` (`allowed` false), e.g. a NaN weight.
    func requireValues(path: String, rule: String, _ allowed: (Float) -> Bool) throws {
        for index in 0..<elementCount where !allowed(value(at: index)) {
            throw ModelError.tensorValue(path: path, tensor: name, element: index, value: value(at: index), rule: rule)
        }
    }
}

/// A `.safetensors` file, memory-mapped (or, for tests, held in memory): an 8-byte little-endian header length, a
/// JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the tensor bytes.
///
/// The header is checked as the reference implementation checks it, with arithmetic that cannot overflow: a length
/// of at most `maxHeaderBytes` inside the file; every shape non-negative with a product (times the dtype size) that
/// fits in an Int; every tensor's `data_offsets` exactly its bytes; and the tensors, sorted by offset, tiling the data
/// section from its first byte to the file's last, with no gap, overlap or trailing bytes.
public final class SafeTensorsFile {
    public let path: String
    private let base: UnsafeRawPointer
    private let size: Int
    private let mapped: Bool
    private let entries: [String: Entry]

    /// The reference implementation's limit; real headers are a few hundred kilobytes at most.
    public static let maxHeaderBytes = 100_000_000

    private struct Entry {
        let dtype: DType
        let shape: [Int]
        let offset: Int
    }

    public var tensorNames: [String] { entries.keys.sorted() }

    public init(path: String) throws {
        self.path = path
        let descriptor = try openRegularFile(path, expected: "a safetensors file")
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw ModelError.malformed(path: path, reason: "cannot stat") }
        let size = Int(status.st_size)
        guard size >= 8 else { throw ModelError.malformed(path: path, reason: "\(size) bytes is too short for a header") }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapping != MAP_FAILED else {
            throw ModelError.malformed(path: path, reason: "cannot be memory-mapped")
        }
        base = UnsafeRawPointer(mapping)
        self.size = size
        mapped = true
        do {
            entries = try Self.parseHeader(UnsafeRawBufferPointer(start: base, count: size), path: path)
        } catch {
            munmap(mapping, size)
            throw error
        }
    }

    /// A file's bytes already in memory (copied): the same checks without file I/O, which fuzzing relies on.
    public init(bytes: Data, path: String) throws {
        self.path = path
        let copy = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(copy), byteCount: $0.count) }
        base = UnsafeRawPointer(copy)
        size = bytes.count
        mapped = false
        do {
            guard size >= 8 else { throw ModelError.malformed(path: path, reason: "\(size) bytes is too short for a header") }
            entries = try Self.parseHeader(UnsafeRawBufferPointer(start: base, count: size), path: path)
        } catch {
            copy.deallocate()
            throw error
        }
    }

    deinit {
        if mapped { munmap(UnsafeMutableRawPointer(mutating: base), size) } else { UnsafeMutableRawPointer(mutating: base).deallocate() }
    }

    public func tensor(_ name: String) -> TensorData? {
        entries[name].map { TensorData(name: name, dtype: $0.dtype, shape: $0.shape, bytes: base + $0.offset, file: self) }
    }

    private struct RawEntry: Decodable {
        let dtype: String
        let shape: [Int]
        let data_offsets: [Int]
    }

    private struct AnyKey: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    /// The header decoded tensor by tensor, skipping `__metadata__`.
    private struct Header: Decodable {
        let tensors: [String: RawEntry]
        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: AnyKey.self)
            var tensors: [String: RawEntry] = [:]
            for key in container.allKeys where key.stringValue != "__metadata__" {
                tensors[key.stringValue] = try container.decode(RawEntry.self, forKey: key)
            }
            self.tensors = tensors
        }
    }

    /// `file`: the whole file, at least 8 bytes.
    private static func parseHeader(_ file: UnsafeRawBufferPointer, path: String) throws -> [String: Entry] {
        // Compared as UInt64 first: a length ≥ 2⁶³ does not fit in an Int.
        let rawLength = UInt64(littleEndian: file.loadUnaligned(as: UInt64.self))
        guard rawLength > 0, rawLength <= UInt64(min(file.count - 8, maxHeaderBytes)) else {
            throw ModelError.malformed(path: path, reason:
                "header length \(rawLength) does not fit in the file's \(file.count) bytes (at most \(maxHeaderBytes))")
        }
        let headerLength = Int(rawLength)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(file[8 ..< 8 + headerLength]))
        } catch {
            throw ModelError.malformed(path: path, reason: "header is not valid safetensors JSON (\(oneLine(error)))")
        }
        let dataStart = 8 + headerLength
        let dataBytes = file.count - dataStart
        var entries: [String: Entry] = [:]
        var extents: [(begin: Int, end: Int, name: String)] = []
        for (name, raw) in header.tensors {
            guard let dtype = DType(safetensors: raw.dtype) else {
                throw ModelError.tensorDType(path: path, tensor: name, dtype: raw.dtype)
            }
            guard raw.data_offsets.count == 2, raw.shape.allSatisfy({ $0 >= 0 }) else {
                throw ModelError.malformed(path: path, reason: "tensor '\(name)' has a malformed shape \(raw.shape) or data_offsets \(raw.data_offsets)")
            }
            var expectedBytes = dtype.byteSize
            for dimension in raw.shape {
                let (product, overflow) = expectedBytes.multipliedReportingOverflow(by: dimension)
                guard !overflow else {
                    throw ModelError.malformed(path: path, reason: "tensor '\(name)' shape \(raw.shape) of \(dtype) overflows a byte count")
                }
                expectedBytes = product
            }
            let (begin, end) = (raw.data_offsets[0], raw.data_offsets[1])
            // end - begin cannot overflow once both are within 0...dataBytes.
            guard begin >= 0, begin <= end, end <= dataBytes, end - begin == expectedBytes else {
                throw ModelError.malformed(path: path, reason:
                    "tensor '\(name)' data_offsets [\(begin), \(end)] do not hold \(raw.shape) \(dtype) (\(expectedBytes) bytes) within the file's \(dataBytes) data bytes")
            }
            entries[name] = Entry(dtype: dtype, shape: raw.shape, offset: dataStart + begin)
            extents.append((begin, end, name))
        }
        // The tensors tile the data section: no two share a byte, none leaves a gap, nothing trails.
        var covered = 0
        for extent in extents.sorted(by: { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }) {
            guard extent.begin == covered else {
                throw ModelError.malformed(path: path, reason: extent.begin < covered
                    ? "tensor '\(extent.name)' data_offsets [\(extent.begin), \(extent.end)] overlap another tensor's bytes (up to \(covered))"
                    : "tensor '\(extent.name)' data_offsets [\(extent.begin), \(extent.end)] leave bytes \(covered)..<\(extent.begin) unused")
            }
            covered = extent.end
        }
        guard covered == dataBytes else {
            throw ModelError.malformed(path: path, reason: "the tensors cover \(covered) of the file's \(dataBytes) data bytes")
        }
        return entries
    }
}

/// The tensors of a model directory: `model.safetensors`, or shards listed by `model.safetensors.index.json`.
public struct Checkpoint {
    private let files: [String: SafeTensorsFile]
    /// Tensor name → file name inside the directory.
    private let fileOfTensor: [String: String]
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        let indexPath = directory + "/model.safetensors.index.json"
        let singlePath = directory + "/model.safetensors"
        if FileManager.default.fileExists(atPath: indexPath) {
            struct Index: Decodable { let weight_map: [String: String] }
            let index: Index = try decodeJSON(Index.self, path: indexPath)
            var files: [String: SafeTensorsFile] = [:]
            for fileName in Set(index.weight_map.values) {
                guard !fileName.contains("/") else {
                    throw ModelError.invalidValue(path: indexPath, field: "weight_map", reason: "names a file outside the directory: \(fileName)")
                }
                files[fileName] = try SafeTensorsFile(path: directory + "/" + fileName)
            }
            self.files = files
            fileOfTensor = index.weight_map
        } else if FileManager.default.fileExists(atPath: singlePath) {
            let file = try SafeTensorsFile(path: singlePath)
            files = ["model.safetensors": file]
            fileOfTensor = Dictionary(uniqueKeysWithValues: file.tensorNames.map { ($0, "model.safetensors") })
        } else {
            throw ModelError.missingFile(path: singlePath, expected: "model.safetensors or model.safetensors.index.json")
        }
    }

    /// 1 + the largest N of the `model.layers.N.` tensors (0 when there are none): config.json must agree with it.
    public var layerCount: Int {
        let prefix = "model.layers."
        return fileOfTensor.keys.reduce(0) { count, name in
            guard name.hasPrefix(prefix), let layer = Int(name.dropFirst(prefix.count).prefix { $0 != "." }), layer >= 0 else { return count }
            return max(count, layer == Int.max ? layer : layer + 1)
        }
    }

    /// The tensor `name`, checked against the expected shape and for non-finite values.
    public func tensor(_ name: String, shape: [Int]) throws -> TensorData {
        guard let fileName = fileOfTensor[name], let file = files[fileName] else {
            throw ModelError.missingTensor(path: directory + "/" + (fileOfTensor[name] ?? "model.safetensors"), tensor: name)
        }
        guard let tensor = file.tensor(name) else { throw ModelError.missingTensor(path: file.path, tensor: name) }
        guard tensor.shape == shape else {
            throw ModelError.tensorShape(path: file.path, tensor: name, expected: shape, actual: tensor.shape)
        }
        if let (index, value) = tensor.firstNonFinite() {
            throw ModelError.tensorValue(path: file.path, tensor: name, element: index, value: value, rule: "weights must be finite")
        }
        return tensor
    }

    public func contains(_ name: String) -> Bool { fileOfTensor[name] != nil }
}

/// Opens `path` for reading if it is a regular file (symbolic links followed); a directory, FIFO or device there is
/// refused before anything reads it (O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever).
func openRegularFile(_ path: String, expected: String) throws -> Int32 {
    let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard descriptor >= 0 else { throw ModelError.missingFile(path: path, expected: expected) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
        close(descriptor)
        throw ModelError.malformed(path: path, reason: "is not a regular file (expected \(expected))")
    }
    return descriptor
}

/// The whole of a regular file (see `openRegularFile`).
func readRegularFile(_ path: String, expected: String) throws -> Data {
    let descriptor = try openRegularFile(path, expected: expected)
    defer { close(descriptor) }
    var data = Data()
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count >= 0 else {
            if errno == EINTR { continue }
            throw ModelError.malformed(path: path, reason: "cannot be read (errno \(errno))")
        }
        if count == 0 { return data }
        data.append(contentsOf: chunk[..<count])
    }
}

/// An error's description on one line (Foundation's decoding errors span several).
/// An error as one line; a decoding error by its plain-language description (not Swift's dump of its context).
func oneLine(_ error: Error) -> String {
    let text: String
    switch error {
    case let DecodingError.typeMismatch(expected, context), let DecodingError.valueNotFound(expected, context):
        text = ([fieldPath(context)].filter { !$0.isEmpty } + ["must be \(jsonKind(expected))"]).joined(separator: " ")
    case let DecodingError.dataCorrupted(context), let DecodingError.keyNotFound(_, context):
        text = ([fieldPath(context)].filter { !$0.isEmpty } + [context.debugDescription]).joined(separator: ": ")
    default:
        text = "\(error)"
    }
    return text.split(whereSeparator: \.isNewline).joined(separator: " ")
}

/// Decodes a JSON file, turning a missing file or bad JSON into a `ModelError` that names it.
func decodeJSON<T: Decodable>(_ type: T.Type, path: String) throws -> T {
    try decodeJSON(type, from: readRegularFile(path, expected: "a JSON file"), path: path)
}

/// Decodes JSON read from `path`, turning bad JSON into a `ModelError` that names it and the field.
func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let DecodingError.typeMismatch(expected, context), let DecodingError.valueNotFound(expected, context) {
        // In JSON's words, not Swift's: these messages reach API clients (adapter loads).
        throw ModelError.invalidValue(path: path, field: fieldPath(context), reason: "must be \(jsonKind(expected))")
    } catch let DecodingError.keyNotFound(key, context) {
        throw ModelError.invalidValue(path: path, field: (fieldPath(context).isEmpty ? "" : fieldPath(context) + ".") + key.stringValue,
                                      reason: "is required but missing")
    } catch let error as ModelError {
        throw error
    } catch {
        throw ModelError.malformed(path: path, reason: "not valid JSON (\(oneLine(error)))")
    }
}

/// What a decoded Swift type is called in JSON.
private func jsonKind(_ type: Any.Type) -> String {
    switch type {
    case is Bool.Type: "true or false"
    case is Int.Type, is Int32.Type, is Int64.Type, is UInt64.Type: "an integer"
    case is Double.Type, is Float.Type: "a number"
    case is String.Type: "a string"
    default: String(describing: type).hasPrefix("Array") ? "an array" : "an object"
    }
}

private func fieldPath(_ context: DecodingError.Context) -> String {
    context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
}
