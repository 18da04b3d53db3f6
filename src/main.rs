//! The `beatd` binary: everything lives in the library; see `beatd::cli`.

fn main() -> std::process::ExitCode {
    beatd::memory::keep_large_blocks_apart();
    beatd::cli::main()
}
