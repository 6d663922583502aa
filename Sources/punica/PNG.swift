/// A minimal PNG encoder for palette images: IHDR, PLTE, one IDAT holding a zlib stream of stored (uncompressed)
/// deflate blocks, IEND. Stored blocks keep the encoder a few lines long and are valid PNG; the images it writes
/// (charts, terminal captures) have few colors, so packing 2, 4 or 8 pixels per byte keeps them reasonably small.
enum PNG {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// `pixels` are palette indices, row-major, `width × height`; `palette` has at most 256 colors.
    static func encode(width: Int, height: Int, palette: [RGB], pixels: [UInt8]) -> [UInt8] {
        precondition(width > 0 && height > 0 && pixels.count == width * height, "pixels must be width × height")
        precondition(!palette.isEmpty && palette.count <= 256, "a PNG palette holds 1 to 256 colors")
        // The fewest bits per index that address the palette; indices packed from each byte's high bits.
        let depth = [1, 2, 4, 8].first { palette.count <= 1 << $0 }!
        let rowBytes = (width * depth + 7) / 8
        var scanlines = [UInt8](repeating: 0, count: (rowBytes + 1) * height)  // each row: filter type 0 (none), then indices
        for row in 0..<height {
            for column in 0..<width {
                let bit = column * depth
                scanlines[row * (rowBytes + 1) + 1 + bit / 8] |= pixels[row * width + column] << (8 - depth - bit % 8)
            }
        }
        var header = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [UInt8(depth), 3, 0, 0, 0]  // bits per index, palette color, deflate, adaptive filtering, no interlace
        return signature
            + chunk("IHDR", header)
            + chunk("PLTE", palette.flatMap { [$0.red, $0.green, $0.blue] })
            + chunk("IDAT", zlibStored(scanlines))
            + chunk("IEND", [])
    }

    /// length, type, data, CRC-32 of type and data.
    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + typed + bigEndian(crc32(typed))
    }

    /// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 §3.2.4): each block is a final-flag byte, its
    /// length and the length's complement (little-endian), then up to 65535 bytes as they are.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]  // deflate, 32 KiB window; header check bits make 0x7801 a multiple of 31
        var start = 0
        repeat {
            let end = min(start + 65535, data.count)
            let length = UInt16(end - start)
            out.append(end == data.count ? 1 : 0)
            out += [UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8(~length >> 8)]
            out += data[start..<end]
            start = end
        } while start < data.count
        return out + bigEndian(adler32(data))
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }

    private static let crcTable: [UInt32] = (0..<256).map { index in
        (0..<8).reduce(UInt32(index)) { crc, _ in crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var (a, b): (UInt32, UInt32) = (1, 0)
        for byte in bytes {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return b << 16 | a
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8((value >> $0) & 0xFF) } }
}

/// A 24-bit color.
struct RGB: Hashable {
    let red: UInt8, green: UInt8, blue: UInt8

    /// From 0xRRGGBB.
    init(_ hex: UInt32) {
        red = UInt8(hex >> 16 & 0xFF)
        green = UInt8(hex >> 8 & 0xFF)
        blue = UInt8(hex & 0xFF)
    }
}

/// A palette image to draw rectangles and bitmap-font text into, then save as PNG. Colors are added to the
/// palette as they are first used.
struct Raster {
    let width: Int
    let height: Int
    private(set) var palette: [RGB] = []
    private(set) var pixels: [UInt8]

    init(width: Int, height: Int, background: RGB) {
        self.width = width
        self.height = height
        palette = [background]
        pixels = [UInt8](repeating: 0, count: width * height)
    }

    /// Fills the rectangle, clipped to the image.
    mutating func fill(x: Int, y: Int, width w: Int, height h: Int, _ color: RGB) {
        let top = min(max(y, 0), height), bottom = max(min(y + h, height), top)
        let left = min(max(x, 0), width), right = max(min(x + w, width), left)
        guard top < bottom && left < right else { return }
        let index = paletteIndex(color)
        for row in top..<bottom {
            for column in left..<right { pixels[row * width + column] = index }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel a `scale × scale` square.
    mutating func text(_ text: String, x: Int, y: Int, _ color: RGB, scale: Int = 1) {
        for (position, character) in text.enumerated() {
            let left = x + position * BitmapFont.advance * scale
            for (row, bits) in BitmapFont.glyph(character).enumerated() {
                for column in 0..<BitmapFont.glyphWidth where bits & (1 << (BitmapFont.glyphWidth - 1 - column)) != 0 {
                    fill(x: left + column * scale, y: y + row * scale, width: scale, height: scale, color)
                }
            }
        }
    }

    func png() -> [UInt8] { PNG.encode(width: width, height: height, palette: palette, pixels: pixels) }

    private mutating func paletteIndex(_ color: RGB) -> UInt8 {
        if let index = palette.firstIndex(of: color) { return UInt8(index) }
        precondition(palette.count < 256, "a palette image holds at most 256 colors")
        palette.append(color)
        return UInt8(palette.count - 1)
    }
}
