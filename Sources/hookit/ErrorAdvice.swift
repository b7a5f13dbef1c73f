import Injector
import RemoteTramp

/// What the user can do about an error, in the command line's own words: the engine's errors
/// name no flag or command (RemoteTramp and Injector know nothing of the CLI), so the CLI adds
/// the flag that helps.
func advice(for error: Error) -> String {
    switch error as? TrampolineError {
    case .memoryBudget?: return "\(error); raise it with --memory-budget"
    case .runtimeMissing?: return "\(error); it is built next to the hookit executable (make build)"
    default: return "\(error)"
    }
}
