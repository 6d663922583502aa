// swift-tools-version:6.0
import PackageDescription

// Dependencies point one way: Compute ← CPU/CUDA; Compute ← Model ← Engine ← CLI.
// Model and Engine never import a concrete backend; the CLI is the only place that picks one.
let package = Package(
    name: "punica",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "punica", targets: ["punica"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "PunicaCompute"),
        .target(name: "PunicaCPU", dependencies: ["PunicaCompute"]),
        .target(name: "PunicaCUDA", dependencies: ["PunicaCompute"], resources: [
            .embedInCode("Kernels/common.cuh"), .embedInCode("Kernels/elementwise.cu"),
            .embedInCode("Kernels/attention.cu"), .embedInCode("Kernels/lora.cu"),
        ]),
        .target(name: "PunicaTokenizer"),
        .target(name: "PunicaModel", dependencies: ["PunicaCompute"]),
        .target(name: "PunicaEngine", dependencies: ["PunicaCompute", "PunicaModel", "PunicaTokenizer"]),
        .executableTarget(name: "punica", dependencies: [
            "PunicaCPU", "PunicaCUDA", "PunicaModel", "PunicaTokenizer", "PunicaEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TestSupport", dependencies: ["PunicaCompute", "PunicaModel", "PunicaEngine"],
                path: "Tests/TestSupport"),
        .testTarget(name: "PunicaCPUTests", dependencies: ["PunicaCPU", "TestSupport"]),
        .testTarget(name: "PunicaCUDATests", dependencies: ["PunicaCUDA", "PunicaCPU", "PunicaModel", "PunicaEngine", "TestSupport"]),
        .testTarget(name: "PunicaTokenizerTests", dependencies: ["PunicaTokenizer", "TestSupport"]),
        .testTarget(name: "PunicaModelTests", dependencies: ["PunicaModel", "PunicaCPU", "TestSupport"]),
        .testTarget(name: "PunicaCLITests", dependencies: ["punica", "TestSupport"]),
        .testTarget(name: "PunicaEngineTests", dependencies: ["PunicaEngine", "PunicaCPU", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
