#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaCompute

/// Writes float32 tensors as a `.safetensors` file (the format `SafeTensorsFile` reads).
public enum SafeTensorsWriter {
    public static func write(_ tensors: [(name: String, shape: [Int], values: [Float])], to path: String) throws {
        var header = "{"
        var offset = 0
        for (index, tensor) in tensors.enumerated() {
            precondition(tensor.shape.reduce(1, *) == tensor.values.count, "\(tensor.name): shape does not match values")
            let end = offset + 4 * tensor.values.count
            header += "\(index == 0 ? "" : ",")\"\(tensor.name)\":{\"dtype\":\"F32\",\"shape\":\(tensor.shape),\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        header += "}"
        // Pad the header with spaces so tensor data starts 8-byte aligned, as the reference writer does.
        header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        var file = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(contentsOf: Array(header.utf8))
        for tensor in tensors { tensor.values.withUnsafeBytes { file.append(contentsOf: $0) } }
        try file.write(to: URL(fileURLWithPath: path))
    }
}
