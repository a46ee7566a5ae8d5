//! Every public YAWL specification of the corpus through the server, with silent tasks running
//! themselves (issue 14 items 6 and 8, in part): each file is registered (client predicates
//! on, so predicates outside the compiled subset take the client's bits); those accepted run
//! cases to completion with a random client that drives only the tasks that carry work
//! (starting an enabled task or completing a busy one, with random branch bits where the
//! client evaluates the predicate); the completed cases are exported as XES and the export is
//! replayed on the model with the importer's replay: every trace must fit.
//!
//! Timers: each specification's timer durations are cut to 200 ms (the test's own variant of
//! the file; the corpus's are months), and the random client sometimes waits for a running
//! timer instead of acting, so some tasks are skipped or completed by their timers and the
//! exports carry `autoskip` events that the replay must fit.
//!
//! Not covered yet (issue 14 item 8): data chosen to exercise both outcomes of every
//! predicate (the cases get 0/1 values), task data mappings.

use std::collections::HashSet;
use std::path::PathBuf;

use knhk_shell::proto;

mod support;
use support::{corpus_path, env_u64, get_case, scratch, spawn, Client, Rng};

const RUNNING: i32 = proto::CaseState::Running as i32;
const COMPLETE: i32 = proto::CaseState::Complete as i32;

/// Steps a case may take before the client gives up on it (a loop the random choices keep
/// taking); a case stopped there is cancelled and not exported.
const MAX_STEPS: usize = 400;

fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["yawl", "yawl-more"] {
        let dir = corpus_path(sub);
        for e in std::fs::read_dir(&dir).expect("corpus dir").flatten() {
            if e.path().extension().is_some_and(|x| x == "yawl") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// The model with every timer `<duration>` cut to 200 ms.
fn shorten_timers(model: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(model);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_ref();
    while let Some(i) = rest.find("<duration>") {
        let Some(j) = rest[i..].find("</duration>") else {
            break;
        };
        out.push_str(&rest[..i]);
        out.push_str("<duration>PT0.2S");
        rest = &rest[i + j..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// What the client does next on a case.
#[derive(Clone)]
enum Move {
    /// Complete the busy task (true) or start/fire the enabled task (false).
    Task(bool, String),
    /// Act on sub-net case `.0` (a composite task's child: the task completes with it).
    Child(u64),
}

/// The moves a client has on `case` of workflow `wf`: complete a busy task (not a composite
/// one: its child case completes it), start an enabled task that carries work, or act on a
/// running child case.
fn moves_of(wf: &proto::Workflow, case: &proto::Case) -> Vec<Move> {
    let automatic: HashSet<&str> = wf
        .tasks
        .iter()
        .filter(|t| t.automatic)
        .map(|t| t.name.as_str())
        .collect();
    let composite: HashSet<&str> = wf
        .tasks
        .iter()
        .filter(|t| !t.subnet.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    let mut moves: Vec<Move> = case
        .busy_tasks
        .iter()
        .filter(|t| !composite.contains(t.as_str()))
        .map(|t| Move::Task(true, t.clone()))
        .collect();
    moves.extend(case.subnet_cases.iter().map(|s| Move::Child(s.case_id)));
    moves.extend(
        case.enabled_tasks
            .iter()
            .filter(|t| !automatic.contains(t.as_str()))
            .map(|t| Move::Task(false, t.clone())),
    );
    if moves.is_empty() {
        // Only silent tasks in a deferred choice among themselves: the client picks one.
        moves.extend(
            case.enabled_tasks
                .iter()
                .map(|t| Move::Task(false, t.clone())),
        );
    }
    moves
}

/// Runs one case with random choices; returns its final state.
async fn run_case(
    c: &mut Client,
    wf: &proto::Workflow,
    rng: &mut Rng,
    problems: &mut Vec<String>,
    timer_moves: &mut u64,
    depth_limited: &mut u64,
) -> (u64, i32) {
    let client_bits: HashSet<&str> = wf
        .client_predicates
        .iter()
        .map(|p| p.task.as_str())
        .collect();
    let data = wf
        .variables
        .iter()
        .map(|v| {
            let value = proto::Value {
                kind: Some(proto::value::Kind::Int((rng.next() % 2) as i64)),
            };
            (v.clone(), value)
        })
        .collect();
    let mut case = match c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            problems.push(format!("{}: create: {e}", wf.workflow_id));
            return (0, 0);
        }
    };
    let id = case.case_id;
    for _ in 0..MAX_STEPS {
        if case.state != RUNNING {
            return (id, case.state);
        }
        // Complete a busy task, start an enabled task that carries work, or act on a child.
        let moves = moves_of(wf, &case);
        // With a timer running, sometimes let it expire instead of acting.
        if !case.timers.is_empty() && (moves.is_empty() || rng.next().is_multiple_of(3)) {
            let seq = case.seq;
            for _ in 0..100 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                case = get_case(c, id).await;
                if case.seq != seq {
                    break;
                }
            }
            if case.seq == seq {
                problems.push(format!(
                    "{}: case {id}: a timer did not fire in 2 s: {case:?}",
                    wf.workflow_id
                ));
                return (id, case.state);
            }
            *timer_moves += 1;
            continue;
        }
        if moves.is_empty() {
            problems.push(format!(
                "{}: case {id} running with nothing enabled or busy: {case:?}",
                wf.workflow_id
            ));
            return (id, case.state);
        }
        let mut chosen = moves[(rng.next() % moves.len() as u64) as usize].clone();
        // Down through sub-net cases to a task move (a child's workflow is a sub-net of `wf`).
        let mut at = id;
        let mut at_wf = wf;
        let mut bits_of = client_bits.clone();
        while let Move::Child(child) = chosen {
            let sub = get_case(c, child).await;
            let Some(sub_wf) = wf.subnets.iter().find(|s| s.workflow_id == sub.workflow_id) else {
                problems.push(format!("case {child}: unknown sub-net {}", sub.workflow_id));
                return (id, case.state);
            };
            let sub_moves = moves_of(sub_wf, &sub);
            if sub.state != RUNNING || sub_moves.is_empty() {
                problems.push(format!(
                    "{}: child case {child} of {at} stuck: {sub:?}",
                    wf.workflow_id
                ));
                return (id, case.state);
            }
            (at, at_wf) = (child, sub_wf);
            bits_of = sub_wf
                .client_predicates
                .iter()
                .map(|p| p.task.as_str())
                .collect();
            chosen = sub_moves[(rng.next() % sub_moves.len() as u64) as usize].clone();
        }
        let Move::Task(complete, task) = chosen else {
            continue;
        };
        let automatic: HashSet<&str> = at_wf
            .tasks
            .iter()
            .filter(|t| t.automatic)
            .map(|t| t.name.as_str())
            .collect();
        let req = proto::TaskRequest {
            case_id: at,
            task: task.clone(),
            branch_bits: (complete && bits_of.contains(task.as_str()))
                .then(|| (rng.next() % 4) as u32),
            ..Default::default()
        };
        let r = if complete {
            c.complete_task(req).await
        } else if automatic.contains(task.as_str()) {
            c.fire_task(req).await
        } else {
            c.start_task(req).await
        };
        match r {
            Ok(k) if at == id => case = k.into_inner(),
            Ok(_) => {
                case = get_case(c, id).await;
            }
            // A timer may have fired between the client's look and its request.
            Err(e) if e.code() == tonic::Code::FailedPrecondition && !case.timers.is_empty() => {
                let seq = case.seq;
                case = get_case(c, id).await;
                if case.seq == seq {
                    problems.push(format!("{}: case {id}: {task}: {e}", wf.workflow_id));
                    return (id, case.state);
                }
            }
            // A recursive net whose data never ends the recursion (its mappings are not
            // executed) reaches the sub-net depth limit: the case cannot go on, as it says.
            Err(e) if e.message().contains("nested deeper than") => {
                let _ = c
                    .cancel_case(proto::CancelCaseRequest { case_id: id })
                    .await;
                *depth_limited += 1;
                return (id, proto::CaseState::Cancelled as i32);
            }
            Err(e) => {
                problems.push(format!("{}: case {id}: {task}: {e}", wf.workflow_id));
                return (id, case.state);
            }
        }
    }
    let _ = c
        .cancel_case(proto::CancelCaseRequest { case_id: id })
        .await;
    (id, proto::CaseState::Cancelled as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_specifications_run_end_to_end_and_their_exports_replay() {
    let cases = env_u64("KNHK_CORPUS_CASES", 12);
    let seed = env_u64("KNHK_SEED", 0x005e_ed14);
    eprintln!("seed {seed:#x}, {cases} cases per specification");
    let dir = scratch("corpus-run");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    let mut rng = Rng(seed | 1);
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    let mut ran = Vec::new();
    let mut timer_moves = 0u64;
    let mut depth_limited = 0u64;
    let opts = knhk_import::Options {
        external_predicates: true,
        ..knhk_import::Options::default()
    };
    for (n, f) in corpus_files().iter().enumerate() {
        let model = shorten_timers(&std::fs::read(f).expect("read"));
        let name = f.file_name().map(|n| n.to_string_lossy().to_string());
        let name = name.unwrap_or_default();
        let wf = match c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: model.clone(),
                workflow_id: format!("w{n}"),
                client_predicates: true,
                ..Default::default()
            })
            .await
        {
            Ok(r) => r.into_inner().workflow.expect("workflow"),
            Err(e) => {
                refused.push(format!("{name}: {}", e.message()));
                continue;
            }
        };
        let mut completed = Vec::new();
        for _ in 0..cases {
            let (id, state) = run_case(
                &mut c,
                &wf,
                &mut rng,
                &mut problems,
                &mut timer_moves,
                &mut depth_limited,
            )
            .await;
            if state == COMPLETE {
                completed.push(id);
            }
        }
        // Replay each completed case's export on the model, as `knhk replay` would.
        let m = knhk_import::import_bytes(&model, &opts).expect("import");
        let net = knhk_import::lower(&m).expect("lower").net;
        for &id in &completed {
            let xes = c
                .export_case_xes(proto::ExportCaseXesRequest {
                    case_id: id,
                    ..Default::default()
                })
                .await
                .expect("export")
                .into_inner()
                .xes;
            let log = knhk_import::xes::read(&xes[..]).expect("read export");
            let r = knhk_import::replay::replay(&m, &net, &log);
            if r.fitting != r.traces {
                problems.push(format!(
                    "{name}: case {id}: export does not replay: {:?}",
                    r.variants.first().map(|v| (&v.events, &v.outcome))
                ));
            }
        }
        ran.push(format!("{name}: {}/{cases} completed", completed.len()));
    }
    p.kill();
    eprintln!("ran: {ran:#?}\nrefused at registration: {refused:#?}");
    assert!(problems.is_empty(), "{problems:#?}");
    eprintln!("{timer_moves} times the client let a timer expire");
    eprintln!("{depth_limited} cases stopped at the sub-net depth limit");
    assert!(
        timer_moves >= 5,
        "timers expired during the run: {timer_moves}"
    );
    assert!(ran.len() >= 20, "most specifications run: {refused:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
