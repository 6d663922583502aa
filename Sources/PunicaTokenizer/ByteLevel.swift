/// GPT-2's reversible byte ↔ character table. Byte-level vocabularies spell every byte as one visible
/// character (printable bytes as themselves, the rest shifted past U+00FF: a space is "Ġ", "\n" is "Ċ"), so
/// the UTF-8 bytes of any text can be spelled with vocabulary symbols.
enum ByteLevel {
    static let scalarForByte: [Unicode.Scalar] = {
        let printable = Set<UInt8>(Array(33...126) + Array(161...172) + Array(174...255))
        var table: [Unicode.Scalar] = []
        var nextShifted: UInt32 = 256
        for byte in UInt8.min...UInt8.max {
            if printable.contains(byte) {
                table.append(Unicode.Scalar(byte))
            } else {
                table.append(Unicode.Scalar(nextShifted)!)
                nextShifted += 1
            }
        }
        return table
    }()

    static let byteForScalar: [Unicode.Scalar: UInt8] = Dictionary(
        uniqueKeysWithValues: scalarForByte.enumerated().map { ($1, UInt8($0)) })

    /// The byte-level spelling of `text`'s UTF-8 bytes.
    static func spell<S: Sequence>(_ text: S) -> [Unicode.Scalar] where S.Element == Unicode.Scalar {
        String(scalars: text).utf8.map { scalarForByte[Int($0)] }
    }

    /// The bytes a token spells. A token with a character outside the table (an added token such as
    /// "<|tool call|>" with a plain space) stands for its own UTF-8 bytes, as in the `tokenizers` decoder.
    static func bytes(spelledBy token: [Unicode.Scalar]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.count)
        for scalar in token {
            guard let byte = byteForScalar[scalar] else { return Array(String(scalars: token).utf8) }
            bytes.append(byte)
        }
        return bytes
    }
}
