//! Commands started together on a fresh state directory (a node's first pods) all open
//! the store: none may fail with "database is locked" (issue 10, item 3).

#[test]
fn store_first_opens_race() {
    let mut failures = vec![];
    for round in 0..30 {
        let dir = std::env::temp_dir().join(format!("knit-race-{}-{round}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(12));
        let ts: Vec<_> = (0..12)
            .map(|_| {
                let (dir, b) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    knit::store::Store::open(&dir)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for t in ts {
            if let Err(e) = t.join().unwrap() {
                failures.push(e);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "{failures:?}");
}
