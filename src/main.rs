fn main() -> anyhow::Result<()> {
    strategist::cli::run()
}
