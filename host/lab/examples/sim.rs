//! `easgate sim` without the rest of the connector: the same flags, the same output.
//! `cargo run --release -p easgate-lab --example sim -- --devices 100000`

use clap::Parser;

#[derive(Parser)]
#[command(about = "The easgate lab: a simulated Exchange organization and Intune tenant")]
struct Cli {
    #[command(flatten)]
    sim: easgate_lab::SimArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    easgate_lab::run_sim(cli.sim, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
