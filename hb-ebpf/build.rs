//! Rebuilds the program when the linker changes: a new bpf-linker (another LLVM) can change
//! the object even when no source did.

use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        // hb-agent's build script checks for the linker first and says how to install it.
        Err(error) => {
            println!("cargo:warning=bpf-linker not found ({error}); run `cargo xtask setup`")
        }
    }
}
