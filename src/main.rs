/// jemalloc rather than glibc's allocator: a server that grants and ends a
/// million leases frees most of what it allocated back to the system, and
/// a mass expiry's allocations per lease cost half as much
/// (ops/bench/RESULTS.md, "Memory per live lease" and "Mass expiry").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tenure::cli::main()
}
