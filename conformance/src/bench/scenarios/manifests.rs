//! manifest-get: the hottest read path, `GET`/`HEAD /v2/<name>/manifests/<tag>`,
//! hammered from one connection and from many.

use std::time::Instant;

use reqwest::Method;

use super::{Cx, ImagePlan};
use crate::bench::{BenchError, load};

/// The small image every round reads, pushed once per registry.
#[derive(Debug, Clone)]
pub(crate) struct ManifestSetup {
    repo: String,
    tag: String,
}

pub(crate) async fn manifest_get(cx: &mut Cx<'_>) -> Result<(), BenchError> {
    if cx.state.manifest.is_none() {
        let started = Instant::now();
        let mode = cx.monolithic_mode().await?;
        let setup = ManifestSetup { repo: cx.repo("manifest"), tag: "latest".to_owned() };
        let plan = ImagePlan::new(vec![cx.fresh(4096).await?]);
        plan.push(cx.target, &setup.repo, &setup.tag, mode).await.map_err(|e| e.context("manifest setup"))?;
        cx.rec.add_setup(started.elapsed().as_secs_f64());
        cx.state.manifest = Some(setup);
    }
    let Some(setup) = cx.state.manifest.clone() else {
        return Err(BenchError::new("manifest setup missing"));
    };
    let params = cx.params().clone();
    for method in [Method::GET, Method::HEAD] {
        for &concurrency in &params.manifest_concurrency {
            let name = format!("{method} c={concurrency}");
            let (target, repo, tag, method) =
                (cx.target.clone(), setup.repo.clone(), setup.tag.clone(), method.clone());
            let result = load(concurrency, params.manifest_duration, params.manifest_max_requests, move |_| {
                let (target, repo, tag, method) = (target.clone(), repo.clone(), tag.clone(), method.clone());
                async move { target.get_manifest(&repo, &tag, method).await }
            })
            .await;
            cx.rec.load(&name, &result, None);
        }
    }
    cx.rec.note(format!(
        "each loop runs {:.1} s; client and server share the machine's cores",
        params.manifest_duration.as_secs_f64()
    ));
    Ok(())
}
