// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way: Compute ← CPU/CUDA; Compute ← Model ← Engine ← Server ← CLI.
// Model and Engine never import a concrete backend; the CLI is the only place that picks one.
let package = Package(
    name: "punica",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "punica", targets: ["punica"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        .target(name: "PunicaCompute"),
        .target(name: "PunicaCPU", dependencies: ["PunicaCompute"]),
        .target(name: "PunicaCUDA", dependencies: ["PunicaCompute"], resources: [
            .embedInCode("Kernels/common.cuh"), .embedInCode("Kernels/elementwise.cu"),
            .embedInCode("Kernels/attention.cu"), .embedInCode("Kernels/lora.cu"), .embedInCode("Kernels/sampling.cu"),
        ]),
        .target(name: "PunicaTokenizer"),
        .target(name: "PunicaModel", dependencies: ["PunicaCompute"]),
        .target(name: "PunicaEngine", dependencies: ["PunicaCompute", "PunicaModel", "PunicaTokenizer"]),
        .target(name: "PunicaServer", dependencies: [
            "PunicaEngine", "PunicaTokenizer",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "punica", dependencies: [
            "PunicaCPU", "PunicaCUDA", "PunicaModel", "PunicaTokenizer", "PunicaEngine", "PunicaServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TestSupport", dependencies: ["PunicaCompute", "PunicaModel", "PunicaEngine", "PunicaTokenizer"],
                path: "Tests/TestSupport"),
        .testTarget(name: "PunicaCPUTests", dependencies: ["PunicaCPU", "TestSupport"]),
        .testTarget(name: "PunicaCUDATests", dependencies: ["PunicaCUDA", "PunicaCPU", "PunicaModel", "PunicaEngine", "TestSupport"]),
        .testTarget(name: "PunicaTokenizerTests", dependencies: ["PunicaTokenizer", "TestSupport"]),
        .testTarget(name: "PunicaModelTests", dependencies: ["PunicaModel", "PunicaCPU", "TestSupport"]),
        .testTarget(name: "PunicaCLITests", dependencies: ["punica", "TestSupport"]),
        .testTarget(name: "PunicaEngineTests", dependencies: ["PunicaEngine", "PunicaCPU", "TestSupport"]),
        .testTarget(name: "PunicaServerTests", dependencies: [
            "PunicaServer", "PunicaEngine", "PunicaTokenizer", "TestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
