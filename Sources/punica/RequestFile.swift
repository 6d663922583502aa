import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import PunicaEngine
import PunicaTokenizer

/// Reads `punica generate --requests`: one JSON request per line; blank lines are skipped.
enum RequestFile {
    struct Line: Decodable {
        var id: String?
        var prompt: String?
        var prompt_ids: [Int]?
        var adapter: String?
        var max_tokens: Int?
        var temperature: Float?
        var top_p: Float?
        var top_k: Int?
        var repetition_penalty: Float?
        var seed: UInt64?
        var stop: StopStrings?
        var stop_token_ids: [Int]?
        var logprobs: Int?
        var ignore_eos: Bool?
    }

    /// `stop`: a string or a list of strings, as in the OpenAI API.
    struct StopStrings: Decodable {
        let values: [String]

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let one = try? container.decode(String.self) {
                values = [one]
            } else {
                values = try container.decode([String].self)
            }
        }
    }

    static func read(path: String, tokenizer: Tokenizer) throws -> [EngineRequest] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("\(path): cannot be read") }
        var requests: [EngineRequest] = []
        for (index, text) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !text.allSatisfy(\.isWhitespace) {
            let location = "\(path):\(index + 1)"
            let line: Line
            do {
                line = try JSONDecoder().decode(Line.self, from: Data(text.utf8))
            } catch {
                throw ValidationError("\(location): not a valid request object (\(error))")
            }
            requests.append(try request(line, id: line.id ?? String(requests.count), tokenizer: tokenizer, location: location))
        }
        if requests.isEmpty { throw ValidationError("\(path): no requests") }
        return requests
    }

    private static func request(_ line: Line, id: String, tokenizer: Tokenizer, location: String) throws -> EngineRequest {
        let promptIDs: [Int]
        switch (line.prompt, line.prompt_ids) {
        case let (nil, ids?):
            promptIDs = ids
        case let (text?, nil):
            promptIDs = tokenizer.encode(text)
        default:
            throw ValidationError("\(location): give exactly one of \"prompt\" or \"prompt_ids\"")
        }
        var sampling = SamplingParameters()
        sampling.maxTokens = line.max_tokens ?? sampling.maxTokens
        sampling.temperature = line.temperature ?? sampling.temperature
        sampling.topP = line.top_p ?? sampling.topP
        sampling.topK = line.top_k ?? sampling.topK
        sampling.repetitionPenalty = line.repetition_penalty ?? sampling.repetitionPenalty
        sampling.seed = line.seed
        sampling.stopStrings = line.stop?.values ?? []
        sampling.stopTokenIDs = line.stop_token_ids ?? []
        sampling.logprobs = line.logprobs ?? 0
        sampling.ignoreEOS = line.ignore_eos ?? false
        do {
            try sampling.validate()
        } catch {
            throw ValidationError("\(location): \(error)")
        }
        return EngineRequest(id: id, promptIDs: promptIDs, adapter: line.adapter, sampling: sampling)
    }
}
