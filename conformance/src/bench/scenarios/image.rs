//! image: whole images pushed, then pulled, by several clients at once, each
//! working on its own repository (what a CI fleet does to a registry).

use std::time::Instant;

use tokio::task::JoinSet;

use super::{Cx, ImagePlan};
use crate::bench::metric::{CeilingKind, Metric, Unit};
use crate::bench::{BenchError, size_label, stats};

/// One client's images: repository, and (tag, image) pairs.
type ClientPlan = (String, Vec<(String, ImagePlan)>);

/// Runs one task per client over `plans`; `work` does one image and returns
/// its bytes. Returns (bytes, images, failures).
async fn phase<F, Fut>(cx: &Cx<'_>, plans: &[ClientPlan], work: F) -> (u64, usize, Vec<String>)
where
    F: Fn(crate::bench::Target, String, String, ImagePlan) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u64, BenchError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (repo, images) in plans.iter().cloned() {
        let (target, work) = (cx.target.clone(), work.clone());
        tasks.spawn(async move {
            let mut bytes = 0;
            for (tag, plan) in images {
                bytes += work(target.clone(), repo.clone(), tag, plan).await?;
            }
            Ok::<_, BenchError>(bytes)
        });
    }
    let (mut bytes, mut images, mut failures) = (0, 0, Vec::new());
    let per_client = plans.first().map_or(0, |(_, images)| images.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(b)) => {
                bytes += b;
                images += per_client;
            }
            Ok(Err(err)) => failures.push(err.to_string()),
            Err(err) => failures.push(format!("client task failed: {err}")),
        }
    }
    (bytes, images, failures)
}

fn record(cx: &mut Cx<'_>, name: &str, result: (u64, usize, Vec<String>), secs: f64, ceiling: CeilingKind) {
    let (bytes, images, failures) = result;
    if let Some(first) = failures.first() {
        cx.rec.error(format!("{name}: {} clients failed, first: {first}", failures.len()));
        cx.rec.metric(Metric::unavailable(name, Unit::ImagesPerSec, format!("failed: {first}")));
        cx.rec.metric(Metric::unavailable(name, Unit::MegabytesPerSec, format!("failed: {first}")));
        return;
    }
    match (stats::per_sec(images as u64, secs), stats::megabytes_per_sec(bytes, secs)) {
        (Some(ips), Some(mbps)) => {
            cx.rec.metric(Metric::new(name, Unit::ImagesPerSec, ips));
            cx.rec.metric(Metric::new(name, Unit::MegabytesPerSec, mbps).with_ceiling(ceiling));
        }
        _ => cx.rec.metric(Metric::unavailable(name, Unit::ImagesPerSec, "nothing was measured")),
    }
}

pub(crate) async fn image(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    let mode = cx.noted_monolithic_mode().await?;
    let p = cx.params().clone();
    // Every image is made and hashed before the clock starts.
    let mut plans: Vec<ClientPlan> = Vec::new();
    for client in 0..p.image_clients {
        let mut images = Vec::new();
        for i in 0..p.images_per_client {
            let layers = cx.fresh_many(std::iter::repeat_n(p.image_layer_size, p.image_layers)).await?;
            images.push((format!("i{i}-{}", uuid::Uuid::new_v4().simple()), ImagePlan::new(layers)));
        }
        plans.push((cx.repo(&format!("image/c{client}")), images));
    }
    cx.rec.note(format!(
        "{} clients in parallel, each {} image(s) of {} × {} layers + config + manifest; push HEADs each blob first",
        p.image_clients,
        p.images_per_client,
        p.image_layers,
        size_label(p.image_layer_size)
    ));

    let started = Instant::now();
    let pushed = phase(cx, &plans, move |target, repo, tag, plan| async move {
        plan.push(&target, &repo, &tag, mode).await.map(|()| plan.total_bytes())
    })
    .await;
    let push_secs = started.elapsed().as_secs_f64();
    record(cx, "push", pushed, push_secs, CeilingKind::Push);

    let started = Instant::now();
    let pulled =
        phase(cx, &plans, |target, repo, tag, plan| async move { plan.pull(&target, &repo, &tag).await }).await;
    let pull_secs = started.elapsed().as_secs_f64();
    record(cx, "pull", pulled, pull_secs, CeilingKind::Pull);
    Ok(())
}
