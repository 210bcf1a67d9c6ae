from clipbench.bench.workflow import breakdown, main

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_breakdown_sums_per_rule(tmp_path, capsys):
    for rel, s, cpu in [("train/classification/sgd/seed0.tsv", 10, 9), ("train/superres/sgd/seed1.tsv", 20, 18),
                        ("noise/classification_init.tsv", 5, 4), ("heavytail.tsv", 3, 3)]:
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(HEADER + f"{s}\t0:00:{s:02d}\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    t = breakdown(tmp_path)
    assert t.loc["train", "jobs"] == 2 and t.loc["train", "wall_s"] == 30 and t.loc["heavytail", "cpu_s"] == 3
    assert main([str(tmp_path), "--wall", "20"]) == 0
    assert "kept 95% of the core-time busy" in capsys.readouterr().out
    # Jobs the job server forked: their CPU time from its log, added to their rule's.
    log = tmp_path / "jobserver.log"
    log.write_text("clipbench jobserver: /tmp/s.sock, 16 modules in 8.7 s\n"
                   "clipbench jobserver: job 101: clipbench train\nclipbench jobserver: job 102: clipbench train\n"
                   "clipbench jobserver: job 101: exit 0, cpu 12.50 s\nclipbench jobserver: job 102: exit 1, cpu 7.25 s\n")
    assert main([str(tmp_path), "--jobserver-log", str(log)]) == 0
    assert "| train | 2 | 30.0 | 15.0 | 46.8 |" in capsys.readouterr().out
