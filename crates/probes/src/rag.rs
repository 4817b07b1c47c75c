//! The architecture's claim: "vector search (pgvector) serves the dashboard's RAG over AI memory".
//!
//! Each probe user gets `memories` 384-dimension embeddings gathered around `clusters` centres
//! (seeded, so the corpus is the same every run: [`Corpus`]). From the fleet's load phase on,
//! `queries` searches near a centre call `match_memories` through the Data API at `rate`
//! (`rpc.match_memories`), and each answer is scored against the exact nearest neighbours computed
//! here by brute force (recall@k). An `hnsw.ef_search` sweep repeats a share of the queries through
//! SQL as the user, one transaction per query with `SET LOCAL`, to show recall against latency.

use std::time::{Duration, Instant};
use tokio_postgres::types::Type;

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use fleetbench_metrics::summary::{ProbeReport, Table};
use fleetbench_scenario::probes::RagPlan;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::users::User;
use crate::{Context, ProbeOutcome, Timing, figure, latency_figures, ms_at};

pub const DIMS: usize = 384;
/// The corpus seed: every run searches the same memories.
pub const SEED: u64 = 0x5EED;
/// Spread of members around their centre, per dimension (the centre has unit length).
const SPREAD: f32 = 0.04;
/// Queries of the sweep per `ef_search` value (at most).
const SWEEP_QUERIES: usize = 40;

/// A probe's memories and queries: the same plan and seed give the same corpus.
pub struct Corpus {
    /// Per user: (content, unit embedding).
    pub memories: Vec<Vec<(String, Vec<f32>)>>,
    /// (user index, unit query embedding).
    pub queries: Vec<(usize, Vec<f32>)>,
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SmallRng) -> f32 {
    let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn near(centre: &[f32], rng: &mut SmallRng) -> Vec<f32> {
    unit(centre.iter().map(|c| c + SPREAD * normal(rng)).collect())
}

impl Corpus {
    pub fn generate(plan: &RagPlan, seed: u64) -> Corpus {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut memories = Vec::new();
        let mut centres = Vec::new();
        for u in 0..plan.users as usize {
            let cs: Vec<Vec<f32>> = (0..plan.clusters)
                .map(|_| unit((0..DIMS).map(|_| normal(&mut rng)).collect()))
                .collect();
            memories.push(
                (0..plan.memories as usize)
                    .map(|j| {
                        let c = j % cs.len();
                        (format!("memory u{u} c{c} #{j}"), near(&cs[c], &mut rng))
                    })
                    .collect(),
            );
            centres.push(cs);
        }
        let queries = (0..plan.queries as usize)
            .map(|i| {
                let u = i % centres.len();
                let c = rng.random_range(0..centres[u].len());
                (u, near(&centres[u][c], &mut rng))
            })
            .collect();
        Corpus { memories, queries }
    }
}

/// The exact `k` nearest memories to `q` by cosine similarity (the truth recall is measured against).
pub fn exact_top_k(memories: &[(String, Vec<f32>)], q: &[f32], k: usize) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = memories
        .iter()
        .map(|(content, v)| {
            let dot: f64 = v
                .iter()
                .zip(q)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let norms: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt()
                * q.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
            (dot / norms, content.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Share of `truth` found in `got`.
pub fn recall(got: &[String], truth: &[String]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    truth.iter().filter(|t| got.contains(t)).count() as f64 / truth.len() as f64
}

/// pgvector's text form of an embedding.
pub fn vector_text(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(","))
}

async fn seed(ctx: &Context, user: &User, memories: &[(String, Vec<f32>)]) -> anyhow::Result<()> {
    for chunk in memories.chunks(250) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|(content, v)| json!({ "content": content, "embedding": v, "device_id": user.device }))
            .collect();
        let res = ctx
            .http
            .post(ctx.api("/rest/v1/memories"))
            .header("apikey", &ctx.target.config.anon_key)
            .bearer_auth(user.token())
            .header("Prefer", "return=minimal")
            .json(&rows)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().as_u16() == 201,
            "seeding memories answered {}: {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn search(
    http: &reqwest::Client,
    api: &str,
    anon: &str,
    user: &User,
    q: &[f32],
    k: u32,
) -> Result<Vec<String>, String> {
    let res = http
        .post(format!("{api}/rest/v1/rpc/match_memories"))
        .header("apikey", anon)
        .bearer_auth(user.token())
        .json(&json!({ "query_embedding": q, "match_count": k }))
        .send()
        .await
        .map_err(|_| "transport".to_string())?;
    let status = res.status().as_u16();
    if status != 200 {
        return Err(format!("http_{status}"));
    }
    let rows: Vec<Value> = res.json().await.map_err(|_| "protocol".to_string())?;
    Ok(rows
        .iter()
        .filter_map(|r| r["content"].as_str().map(String::from))
        .collect())
}

/// One search through SQL as `user` on the HNSW index, with `hnsw.ef_search` set for its transaction.
async fn search_sql(
    db: &mut tokio_postgres::Client,
    user: &User,
    ef: u32,
    q: &[f32],
    k: u32,
) -> anyhow::Result<Vec<String>> {
    let tx = db.transaction().await?;
    let claims = json!({ "sub": user.id, "role": "authenticated" }).to_string();
    // The planner's alternatives are priced out so that the HNSW index answers at this ef_search.
    tx.batch_execute(&format!(
        "set local role authenticated; set local hnsw.ef_search = {ef}; \
         set local enable_seqscan = off; set local enable_bitmapscan = off; set local enable_sort = off"
    ))
    .await?;
    // Unnamed statements: on a URL that may be the transaction pooler.
    tx.query_typed(
        "select set_config('request.jwt.claims', $1, true)",
        &[(&claims, Type::TEXT)],
    )
    .await?;
    let rows = tx
        .query_typed(
            "select content from public.match_memories($1::text::extensions.vector, $2)",
            &[(&vector_text(q), Type::TEXT), (&(k as i32), Type::INT4)],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether the caller's search is planned on the HNSW index (EXPLAIN of match_memories' query).
async fn uses_index(
    db: &mut tokio_postgres::Client,
    user: &User,
    q: &[f32],
    k: u32,
) -> anyhow::Result<bool> {
    let tx = db.transaction().await?;
    let claims = json!({ "sub": user.id, "role": "authenticated" }).to_string();
    tx.batch_execute("set local role authenticated").await?;
    tx.query_typed(
        "select set_config('request.jwt.claims', $1, true)",
        &[(&claims, Type::TEXT)],
    )
    .await?;
    let plan = tx
        .query_typed(
            "explain select m.id from public.memories m where m.user_id = (select auth.uid()) \
             order by m.embedding operator(extensions.<=>) $1::text::extensions.vector limit $2",
            &[(&vector_text(q), Type::TEXT), (&i64::from(k), Type::INT8)],
        )
        .await?;
    tx.commit().await?;
    Ok(plan.iter().any(|r| {
        r.get::<_, String>(0)
            .contains("memories_embedding_hnsw_idx")
    }))
}

/// What the paced searches through the Data API found: their samples, recall against the exact
/// neighbours, latency from the intended start, failures by kind, and short answers.
struct Searched {
    agg: Aggregate,
    recalls: Vec<f64>,
    latency: Histogram<u64>,
    errors: Vec<String>,
    /// Answers with fewer than k rows although the caller owns more than k memories.
    short: u64,
}

/// The queries at `plan.rate` through `match_memories`, each scored against `truths`.
async fn searches(
    ctx: &Context,
    plan: &RagPlan,
    users: &[User],
    corpus: &Corpus,
    truths: &[Vec<String>],
) -> anyhow::Result<Searched> {
    let mut agg = Aggregate::new(ctx.window_us);
    let (start, start_us) = (tokio::time::Instant::now(), ctx.clock.now_us());
    let mut set = tokio::task::JoinSet::new();
    for (i, (u, q)) in corpus.queries.iter().enumerate() {
        let offset = Duration::from_secs_f64(i as f64 / plan.rate);
        tokio::time::sleep_until(start + offset).await;
        let intended = start_us + offset.as_micros() as u64;
        let (http, api, anon, user, q, k, clock) = (
            ctx.http.clone(),
            ctx.target.config.api_url.clone(),
            ctx.target.config.anon_key.clone(),
            users[*u].clone(),
            q.clone(),
            plan.k,
            ctx.clock,
        );
        set.spawn(async move {
            let sent = clock.now_us();
            let r = search(&http, &api, &anon, &user, &q, k).await;
            (i, intended, sent, clock.now_us(), r)
        });
    }
    let mut recalls = Vec::new();
    let mut latency = histogram();
    let mut errors = Vec::new();
    let mut short = 0u64;
    while let Some(r) = set.join_next().await {
        let (i, intended, sent, done, r) = r?;
        let timing = Timing {
            intended_us: intended,
            sent_us: sent,
            done_us: done,
        };
        match r {
            Ok(got) => {
                ctx.sample(&mut agg, "rpc.match_memories", timing, None);
                latency.saturating_record(done.saturating_sub(intended).max(1));
                if got.len() < plan.k as usize {
                    short += 1;
                }
                recalls.push(recall(&got, &truths[i]));
            }
            Err(kind) => {
                ctx.sample(&mut agg, "rpc.match_memories", timing, Some(&kind));
                errors.push(kind);
            }
        }
    }

    Ok(Searched {
        agg,
        recalls,
        latency,
        errors,
        short,
    })
}

/// The `hnsw.ef_search` sweep through SQL as the user (recall and latency per setting), and
/// whether the planner uses the index; skipped, and said so, without SQL access.
async fn sweep(
    ctx: &Context,
    plan: &RagPlan,
    users: &[User],
    corpus: &Corpus,
    truths: &[Vec<String>],
) -> anyhow::Result<(Table, Vec<String>)> {
    let mut table = Table {
        title: format!(
            "hnsw.ef_search sweep (recall@{}, SQL as the user on the HNSW index, {} queries each)",
            plan.k,
            SWEEP_QUERIES.min(corpus.queries.len())
        ),
        columns: ["ef_search", "recall mean", "recall min", "p50 ms", "p95 ms"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    let mut findings = Vec::new();
    if ctx.admin_db_url.is_some() {
        let mut db = ctx.admin().await?;
        for &ef in &plan.ef_search {
            let mut h = histogram();
            let mut rs = Vec::new();
            for (i, (u, q)) in corpus.queries.iter().enumerate().take(SWEEP_QUERIES) {
                let t = Instant::now();
                let got = search_sql(&mut db, &users[*u], ef, q, plan.k).await?;
                h.saturating_record(t.elapsed().as_micros().max(1) as u64);
                rs.push(recall(&got, &truths[i]));
            }
            let mean = rs.iter().sum::<f64>() / rs.len().max(1) as f64;
            let min = rs.iter().copied().fold(1.0, f64::min);
            table.rows.push(vec![
                ef.to_string(),
                format!("{mean:.3}"),
                format!("{min:.2}"),
                format!("{:.2}", ms_at(&h, 0.5)),
                format!("{:.2}", ms_at(&h, 0.95)),
            ]);
        }
        let (u, q) = &corpus.queries[0];
        findings.push(if uses_index(&mut db, &users[*u], q, plan.k).await? {
            "the caller's search is planned on the HNSW index (memories_embedding_hnsw_idx)".to_string()
        } else {
            format!(
                "with {} memories per user the planner prefers an exact scan of the caller's rows over the HNSW index: recall is exact at this size, and the index pays off only for larger per-user sets",
                plan.memories
            )
        });
    } else {
        findings.push("no SQL access: the ef_search sweep was skipped".into());
    }

    Ok((table, findings))
}

pub async fn run(ctx: &Context, plan: &RagPlan) -> anyhow::Result<ProbeOutcome> {
    let users = crate::users::provision(ctx, "rag", plan.users).await?;
    let corpus = Corpus::generate(plan, SEED);
    let seeding = Instant::now();
    for (u, user) in users.iter().enumerate() {
        seed(ctx, user, &corpus.memories[u]).await?;
    }
    let seeded = seeding.elapsed();
    let truths: Vec<Vec<String>> = corpus
        .queries
        .iter()
        .map(|(u, q)| exact_top_k(&corpus.memories[*u], q, plan.k as usize))
        .collect();

    ctx.started().await;
    let searched = searches(ctx, plan, &users, &corpus, &truths).await?;
    let (table, mut findings) = sweep(ctx, plan, &users, &corpus, &truths).await?;
    let Searched {
        agg,
        recalls,
        latency,
        errors,
        short,
    } = searched;

    let mean = recalls.iter().sum::<f64>() / recalls.len().max(1) as f64;
    let min = recalls.iter().copied().fold(1.0, f64::min);
    findings.insert(
        0,
        format!(
            "{} of {} searches answered; mean recall@{} {mean:.3} against exact search",
            recalls.len(),
            corpus.queries.len(),
            plan.k
        ),
    );
    if !errors.is_empty() {
        findings.push(format!("failed searches by kind: {errors:?}"));
    }
    let missed = recalls.iter().filter(|r| **r == 0.0).count();
    if missed > 0 {
        findings.push(format!(
            "{missed} searches found none of their true neighbours: HNSW's greedy walk stayed in another cluster (well-separated clusters are its known weak case; a larger ef_search or m reaches further)"
        ));
    }
    if short > 0 {
        findings.push(format!(
            "{short} searches returned fewer than {} rows although the caller owns {} memories (the filtered HNSW scan stopped early)",
            plan.k, plan.memories
        ));
    }
    let total = u64::from(plan.users) * u64::from(plan.memories);
    let mut figures = vec![
        figure("memories seeded", total as f64, "rows", None),
        figure(
            "seeding rate",
            total as f64 / seeded.as_secs_f64().max(1e-9),
            "rows/s",
            None,
        ),
        figure(
            &format!("recall@{} mean", plan.k),
            mean,
            "fraction",
            Some("published HNSW runs: accuracy 0.99"),
        ),
        figure(&format!("recall@{} min", plan.k), min, "fraction", None),
        figure("searches with recall 0", missed as f64, "searches", None),
    ];
    figures.extend(latency_figures(
        "match_memories",
        &latency,
        Some("384 dims, 100k vectors, Micro: p95 24 ms at 580 QPS"),
    ));
    let pass = errors.is_empty() && !recalls.is_empty() && short == 0;
    Ok(ProbeOutcome {
        report: ProbeReport {
            claim: "pgvector serves the dashboard's RAG over AI memory".into(),
            verdict: if pass { "pass" } else { "fail" }.into(),
            figures,
            findings,
            tables: vec![table],
            ..Default::default()
        },
        aggregate: agg,
    })
}
