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
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.20.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "PunicaCompute"),
        .target(name: "PunicaCPUKernels"),
        .target(name: "PunicaCPU", dependencies: ["PunicaCompute", "PunicaCPUKernels"]),
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
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
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
            "PunicaServer", "PunicaEngine", "PunicaTokenizer", "PunicaCPU", "PunicaModel", "TestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
