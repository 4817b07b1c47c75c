pub async fn run(_ctx: &crate::Context) -> anyhow::Result<crate::Outcome> { anyhow::bail!("todo") }
