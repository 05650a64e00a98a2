// mimalloc instead of glibc malloc: under load, requests allocate rows on the actix
// worker threads that the log writer thread frees, and glibc's per-arena locking and
// consolidation took a sixth of the workers' CPU (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before any thread starts: it writes the environment.
    strategist::scoring::settle_cpu_threads();
    strategist::cli::run()
}
