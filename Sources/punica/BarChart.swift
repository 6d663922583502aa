#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A grouped bar chart in the style of Punica's throughput figure: one group per workload, one bar per system,
/// the value written above each bar.
struct BarChart {
    struct Series {
        let name: String
        let color: RGB
    }

    let title: String
    let unit: String
    let groups: [String]
    let series: [Series]
    /// values[group][series]
    let values: [[Double]]

    private static let background = RGB(0xFFFFFF), ink = RGB(0x202020), grid = RGB(0xDDDDDD)
    /// Labels are drawn at twice the font size, values above bars at the font's own size.
    private static let labelScale = 2

    func render(width: Int = 960, height: Int = 540) -> Raster {
        var image = Raster(width: width, height: height, background: Self.background)
        let charWidth = BitmapFont.advance * Self.labelScale, charHeight = BitmapFont.glyphHeight * Self.labelScale
        image.text(title, x: (width - title.count * charWidth) / 2, y: 14, Self.ink, scale: Self.labelScale)

        // Legend: a swatch and the series name per entry, in centered rows under the title.
        let entryWidths = series.map { charHeight + 8 + $0.name.count * charWidth + 24 }
        var legendRows: [[Int]] = [[]]
        for (index, entryWidth) in entryWidths.enumerated() {
            let rowWidth = legendRows[legendRows.count - 1].reduce(0) { $0 + entryWidths[$1] }
            if rowWidth + entryWidth > width - 32 && !legendRows[legendRows.count - 1].isEmpty { legendRows.append([]) }
            legendRows[legendRows.count - 1].append(index)
        }
        var legendY = 44
        for row in legendRows {
            var legendX = (width - row.reduce(0) { $0 + entryWidths[$1] } + 24) / 2
            for index in row {
                image.fill(x: legendX, y: legendY, width: charHeight, height: charHeight, series[index].color)
                image.text(series[index].name, x: legendX + charHeight + 8, y: legendY, Self.ink, scale: Self.labelScale)
                legendX += entryWidths[index]
            }
            legendY += charHeight + 10
        }
        image.text(unit, x: 8, y: legendY + 4, Self.ink, scale: Self.labelScale)

        let (left, right, top, bottom) = (96, width - 16, legendY + charHeight + 24, height - 44)
        let largest = max(values.joined().max() ?? 0, 1e-9)
        let tick = Self.niceStep(largest / 5)
        let ceiling = tick * (largest * 1.08 / tick).rounded(.up)
        func y(_ value: Double) -> Int { bottom - Int((value / ceiling * Double(bottom - top)).rounded()) }

        for step in 0...Int((ceiling / tick).rounded()) {
            let value = Double(step) * tick, lineY = y(value)
            image.fill(x: left, y: lineY, width: right - left, height: 1, Self.grid)
            let label = Self.format(value, step: tick)
            image.text(label, x: left - 8 - label.count * charWidth, y: lineY - charHeight / 2, Self.ink, scale: Self.labelScale)
        }

        let groupWidth = (right - left) / max(groups.count, 1)
        let barWidth = groupWidth * 4 / 5 / max(series.count, 1)
        for (group, name) in groups.enumerated() {
            let groupX = left + group * groupWidth + groupWidth / 10
            for (index, entry) in series.enumerated() {
                let value = values[group][index], barX = groupX + index * barWidth
                image.fill(x: barX + 1, y: y(value), width: barWidth - 2, height: bottom - y(value), entry.color)
                let label = Self.format(value, step: tick / 10)
                image.text(label, x: barX + (barWidth - label.count * BitmapFont.advance) / 2, y: y(value) - BitmapFont.glyphHeight - 3, Self.ink)
            }
            image.text(name, x: left + group * groupWidth + (groupWidth - name.count * charWidth) / 2, y: bottom + 12, Self.ink,
                       scale: Self.labelScale)
        }
        image.fill(x: left, y: bottom, width: right - left, height: 2, Self.ink)
        image.fill(x: left, y: top, width: 2, height: bottom - top, Self.ink)
        return image
    }

    /// The smallest of 1, 2 and 5 times a power of ten that is at least `raw`: gridlines at round numbers.
    static func niceStep(_ raw: Double) -> Double {
        let power = pow(10, floor(log10(raw)))
        return [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw * (1 - 1e-9) }!
    }

    /// `value` with as many decimals as `step` needs.
    private static func format(_ value: Double, step: Double) -> String {
        fixed(value, step >= 1 ? 0 : Int((-log10(step)).rounded(.up)))
    }
}
