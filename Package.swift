// swift-tools-version:6.0
import PackageDescription

// Data flows one way: hookit -> RemoteTramp -> Injector -> CPtrace (see ../shared/design.md).
let package = Package(
    name: "hookit",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "hookit", targets: ["hookit"]),
        .library(name: "Injector", targets: ["Injector"]),
        .library(name: "RemoteTramp", targets: ["RemoteTramp"]),
        // Loaded into the tracee for user programs (recursion guard, statistics).
        .library(name: "hookit_rt", type: .dynamic, targets: ["HookitRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // --prometheus: the text exposition format (counters; see PrometheusExport.swift).
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(
            name: "CPtrace",
            linkerSettings: [.linkedLibrary("elf"), .linkedLibrary("dw"), .linkedLibrary("Zydis"), .linkedLibrary("iberty")]
        ),
        .target(name: "Injector", dependencies: ["CPtrace"]),
        // General registers only: images whose programs are all hookit's own skip the XSAVE of
        // the vector state (the runtime must never touch a vector or x87 register).
        // No Swift start-up object (swiftrt.o registers the library with the Swift runtime from
        // a constructor): the runtime is C, and `hookit run` preloads it without libswiftCore.
        .target(name: "HookitRuntime",
                cSettings: [.headerSearchPath("../../include"), .unsafeFlags(["-mgeneral-regs-only", "-O2"])],
                linkerSettings: [.unsafeFlags(["-nostartfiles"])]),
        .target(name: "RemoteTramp", dependencies: ["Injector", "CPtrace"]),
        .executableTarget(
            name: "hookit",
            dependencies: [
                "Injector", "RemoteTramp",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(name: "TestSupport", dependencies: ["Injector"], path: "Tests/TestSupport"),
        .testTarget(name: "InjectorTests", dependencies: ["Injector", "CPtrace", "TestSupport"]),
        .testTarget(name: "HookitCLITests", dependencies: ["CPtrace", "TestSupport"]),
        .testTarget(name: "RealProgramTests", dependencies: ["CPtrace", "TestSupport"]),
        .testTarget(name: "RemoteTrampTests", dependencies: ["RemoteTramp", "Injector", "CPtrace", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
