import Testing
@testable import punica

/// The PNG encoder read back by a small decoder of what it writes: chunks with their CRCs, and a zlib stream of
/// stored deflate blocks with its Adler-32.
@Suite struct PNGTests {
    struct Decoded {
        var chunks: [(type: String, data: [UInt8])] = []
        var width = 0, height = 0
        var palette: [RGB] = []
        var pixels: [UInt8] = []
        var storedBlocks = 0
    }

    func decode(_ png: [UInt8]) throws -> Decoded {
        try #require(Array(png.prefix(8)) == PNG.signature)
        var decoded = Decoded(), offset = 8
        func number(_ at: Int) -> Int { png[at ..< at + 4].reduce(0) { $0 << 8 | Int($1) } }
        while offset < png.count {
            let length = number(offset)
            let typed = Array(png[offset + 4 ..< offset + 8 + length])
            #expect(UInt32(number(offset + 8 + length)) == PNG.crc32(typed), "CRC of chunk at \(offset)")
            decoded.chunks.append((String(decoding: typed.prefix(4), as: UTF8.self), Array(typed.dropFirst(4))))
            offset += 12 + length
        }
        let header = try #require(decoded.chunks.first { $0.type == "IHDR" }).data
        decoded.width = header[0..<4].reduce(0) { $0 << 8 | Int($1) }
        decoded.height = header[4..<8].reduce(0) { $0 << 8 | Int($1) }
        let depth = Int(header[8])
        #expect([1, 2, 4, 8].contains(depth) && Array(header[9...]) == [3, 0, 0, 0])
        let plte = try #require(decoded.chunks.first { $0.type == "PLTE" }).data
        decoded.palette = stride(from: 0, to: plte.count, by: 3).map { RGB(UInt32(plte[$0]) << 16 | UInt32(plte[$0 + 1]) << 8 | UInt32(plte[$0 + 2])) }

        let zlib = try #require(decoded.chunks.first { $0.type == "IDAT" }).data
        #expect((Int(zlib[0]) << 8 | Int(zlib[1])) % 31 == 0 && zlib[0] & 0x0F == 8)
        var inflated: [UInt8] = [], position = 2, final = false
        while !final {
            final = zlib[position] & 1 == 1
            #expect(zlib[position] >> 1 == 0, "stored block")
            let length = Int(zlib[position + 1]) | Int(zlib[position + 2]) << 8
            #expect(length ^ (Int(zlib[position + 3]) | Int(zlib[position + 4]) << 8) == 0xFFFF)
            inflated += zlib[position + 5 ..< position + 5 + length]
            position += 5 + length
            decoded.storedBlocks += 1
        }
        #expect(UInt32(zlib[position...].reduce(0) { $0 << 8 | Int($1) }) == PNG.adler32(inflated))
        let rowBytes = (decoded.width * depth + 7) / 8
        #expect(inflated.count == (rowBytes + 1) * decoded.height)
        for row in 0..<decoded.height {
            let start = row * (rowBytes + 1)
            #expect(inflated[start] == 0, "filter type of row \(row)")
            for column in 0..<decoded.width {
                let bit = column * depth
                decoded.pixels.append(inflated[start + 1 + bit / 8] >> (8 - depth - bit % 8) & UInt8((1 << depth) - 1))
            }
        }
        #expect(decoded.chunks.last?.type == "IEND")
        return decoded
    }

    @Test func checksumsMatchTheirStandardCheckValues() {
        #expect(PNG.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
    }

    /// Palettes of 2, 3, 16, 17 and 256 colors: 1, 2, 4, 8 and 8 bits per pixel, rows not a whole number of bytes.
    @Test(arguments: [2, 3, 16, 17, 256])
    func smallImageRoundTrips(colors: Int) throws {
        let palette = (0..<colors).map { RGB(UInt32($0) * 0x010101) }
        let (width, height) = (7, 3)
        let pixels = (0..<width * height).map { UInt8($0 * 5 % colors) }
        let decoded = try decode(PNG.encode(width: width, height: height, palette: palette, pixels: pixels))
        #expect(decoded.width == width && decoded.height == height && decoded.palette == palette && decoded.pixels == pixels)
        #expect(decoded.chunks.map(\.type) == ["IHDR", "PLTE", "IDAT", "IEND"])
    }

    /// More than 65535 bytes of scanlines need several stored blocks; drawing is clipped to the image.
    @Test func largeImageSpansSeveralStoredBlocks() throws {
        let width = 2000
        var image = Raster(width: width, height: 300, background: RGB(0x000000))
        image.fill(x: 390, y: 290, width: 10, height: 50, RGB(0x00FF00))  // clipped at the bottom
        image.fill(x: -10, y: -10, width: 15, height: 15, RGB(0xFF00FF))  // clipped at the origin
        image.fill(x: 5000, y: 5000, width: 5, height: 5, RGB(0x123456))  // entirely outside: draws nothing
        let decoded = try decode(image.png())
        #expect(decoded.storedBlocks == 3)
        #expect(decoded.pixels == image.pixels && decoded.palette == image.palette && decoded.palette.count == 3)
        #expect(decoded.pixels[299 * width + 399] == 1 && decoded.pixels[299 * width + 400] == 0 && decoded.pixels[289 * width + 399] == 0)
        #expect(decoded.pixels[4 * width + 4] == 2 && decoded.pixels[5 * width] == 0 && decoded.pixels[5] == 0)
    }

    @Test func textDrawsTheGlyphsPixels() {
        var image = Raster(width: 20, height: 20, background: RGB(0xFFFFFF))
        image.text("I", x: 2, y: 1, RGB(0x000000), scale: 2)
        // "I" is .###. on its top row: font columns 1–3, doubled, from x = 2.
        let top = (0..<20).map { image.pixels[2 * 20 + $0] }
        #expect(top == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func everyPrintableASCIICharacterHasItsOwnGlyph() {
        let box = BitmapFont.glyph("\u{1F600}")
        for scalar in UInt8(33)...UInt8(126) {
            let glyph = BitmapFont.glyph(Character(UnicodeScalar(scalar)))
            #expect(glyph != box && glyph.count == BitmapFont.glyphHeight && glyph.allSatisfy { $0 < 1 << BitmapFont.glyphWidth },
                    "\(Character(UnicodeScalar(scalar)))")
        }
        #expect(BitmapFont.glyph(" ").allSatisfy { $0 == 0 })
    }

    @Test func chartGridlinesFallOnRoundNumbers() {
        #expect(BarChart.niceStep(0.7) == 1 && BarChart.niceStep(1.3) == 2 && BarChart.niceStep(180) == 200)
        #expect(BarChart.niceStep(230) == 500 && BarChart.niceStep(500) == 500 && BarChart.niceStep(0.04) == 0.05)
    }
}
