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

/// A tensor inside a memory-mapped safetensors file. `bytes` stays valid while its file is alive.
public struct TensorData {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let bytes: UnsafeRawPointer
    /// The file that maps `bytes`; held so the mapping outlives every use of the pointer.
    let file: SafeTensorsFile

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the tensor bytes.
public final class SafeTensorsFile {
    public let path: String
    private let base: UnsafeRawPointer
    private let mappedSize: Int
    private let entries: [String: Entry]

    private struct Entry {
        let dtype: DType
        let shape: [Int]
        let offset: Int
    }

    public var tensorNames: [String] { entries.keys.sorted() }

    public init(path: String) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw ModelError.missingFile(path: path, expected: "a safetensors file") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw ModelError.malformed(path: path, reason: "cannot stat") }
        let size = Int(status.st_size)
        guard size >= 8 else { throw ModelError.malformed(path: path, reason: "\(size) bytes is too short for a header") }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapping != MAP_FAILED else {
            throw ModelError.malformed(path: path, reason: "cannot be memory-mapped")
        }
        base = UnsafeRawPointer(mapping)
        mappedSize = size
        do {
            entries = try Self.parseHeader(base: base, size: size, path: path)
        } catch {
            munmap(mapping, size)
            throw error
        }
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), mappedSize) }

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

    private static func parseHeader(base: UnsafeRawPointer, size: Int, path: String) throws -> [String: Entry] {
        let headerLength = Int(UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)))
        guard headerLength > 0, headerLength <= size - 8 else {
            throw ModelError.malformed(path: path, reason: "header length \(headerLength) does not fit in \(size) bytes")
        }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(bytes: base + 8, count: headerLength))
        } catch {
            throw ModelError.malformed(path: path, reason: "header is not valid safetensors JSON (\(error))")
        }
        let dataStart = 8 + headerLength
        var entries: [String: Entry] = [:]
        for (name, raw) in header.tensors {
            guard let dtype = DType(safetensors: raw.dtype) else {
                throw ModelError.tensorDType(path: path, tensor: name, dtype: raw.dtype)
            }
            guard raw.data_offsets.count == 2, raw.shape.allSatisfy({ $0 >= 0 }) else {
                throw ModelError.malformed(path: path, reason: "tensor '\(name)' has a malformed shape or data_offsets")
            }
            let (begin, end) = (raw.data_offsets[0], raw.data_offsets[1])
            let expectedBytes = raw.shape.reduce(1, *) * dtype.byteSize
            guard begin >= 0, end - begin == expectedBytes, dataStart + end <= size else {
                throw ModelError.malformed(path: path, reason:
                    "tensor '\(name)' data_offsets [\(begin), \(end)] do not hold \(raw.shape) \(dtype) (\(expectedBytes) bytes) within the file's \(size - dataStart) data bytes")
            }
            entries[name] = Entry(dtype: dtype, shape: raw.shape, offset: dataStart + begin)
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

    /// The tensor `name`, checked against the expected shape.
    public func tensor(_ name: String, shape: [Int]) throws -> TensorData {
        guard let fileName = fileOfTensor[name], let file = files[fileName] else {
            throw ModelError.missingTensor(path: directory + "/" + (fileOfTensor[name] ?? "model.safetensors"), tensor: name)
        }
        guard let tensor = file.tensor(name) else { throw ModelError.missingTensor(path: file.path, tensor: name) }
        guard tensor.shape == shape else {
            throw ModelError.tensorShape(path: file.path, tensor: name, expected: shape, actual: tensor.shape)
        }
        return tensor
    }

    public func contains(_ name: String) -> Bool { fileOfTensor[name] != nil }
}

/// Decodes a JSON file, turning a missing file or bad JSON into a `ModelError` that names it.
func decodeJSON<T: Decodable>(_ type: T.Type, path: String) throws -> T {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ModelError.missingFile(path: path, expected: "a JSON file")
    }
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
        throw ModelError.invalidValue(path: path, field: fieldPath(context), reason: "has the wrong type: \(context.debugDescription)")
    } catch let DecodingError.keyNotFound(key, context) {
        throw ModelError.invalidValue(path: path, field: (fieldPath(context).isEmpty ? "" : fieldPath(context) + ".") + key.stringValue,
                                      reason: "is required but missing")
    } catch {
        throw ModelError.malformed(path: path, reason: "not valid JSON (\(error))")
    }
}

private func fieldPath(_ context: DecodingError.Context) -> String {
    context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
}
