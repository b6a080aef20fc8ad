import multiprocessing

import pytest

from oss_cluster.runs import RunExistsError, RunName, RunNameError, RunRegistry
from oss_cluster.storage import open_storage


def test_parse_and_format():
    name = RunName.parse("srcnn-v6.2-pico-002")
    assert (name.family, name.major, name.minor, name.tier, name.number) == ("srcnn", 6, 2, "pico", 2)
    assert str(name) == "srcnn-v6.2-pico-002"
    assert str(RunName.make("hat", "0.1", "heavy", 17)) == "hat-v0.1-heavy-017"


@pytest.mark.parametrize("bad", ["srcnn-v6-pico-002", "srcnn-v6.2-ultra-002", "SRCNN-v6.2-pico-002",
                                 "srcnn-v6.2-pico-2", "srcnn_v6.2_pico_002", ""])
def test_invalid_names(bad):
    with pytest.raises(RunNameError):
        RunName.parse(bad)


def test_allocate_numbers_in_series_and_freezes(storage):
    registry = RunRegistry(storage)
    first = registry.allocate("hat", "0.1", "pico", config={"a": 1})
    second = registry.allocate("hat", "0.1", "pico")
    other = registry.allocate("hat", "0.2", "pico")
    assert [str(first.name), str(second.name), str(other.name)] == ["hat-v0.1-pico-001", "hat-v0.1-pico-002", "hat-v0.2-pico-001"]
    with pytest.raises(RunExistsError, match="frozen"):
        registry.create("hat-v0.1-pico-001")
    assert registry.open("hat-v0.1-pico-001").record["config"] == {"a": 1}  # untouched by the refused create


def test_metrics_json_records_everything(storage):
    registry = RunRegistry(storage)
    run = registry.allocate("srcnn", "6.2", "pico", config={"train": {"lr": 1e-3}}, node_types={"cpu": 1})
    run.mark_started()
    run.log_step(1, loss=0.5, lr=1e-3)
    run.log_eval(1, psnr_rgb=30.0)
    run.add_artefact("strip", run.key("strips", "step-1.png"))
    run.set_node_types({"heavy_trainer": 2})
    run.finish()
    record = storage.read_json(f"runs/{run.name}/metrics.json")
    assert record["config"] == {"train": {"lr": 1e-3}}
    assert record["node_types"] == {"heavy_trainer": 2}
    assert record["step_metrics"][0]["loss"] == 0.5 and record["eval_metrics"][0]["psnr_rgb"] == 30.0
    assert record["artefacts"]["strip"] == f"runs/{run.name}/strips/step-1.png"
    assert record["started_at"] and record["ended_at"] and record["status"] == "finished"


def test_open_missing_run(storage):
    with pytest.raises(FileNotFoundError, match="no run hat-v0.1-pico-009"):
        RunRegistry(storage).open("hat-v0.1-pico-009")


def _allocate_many(uri, endpoint, barrier, count, queue):
    registry = RunRegistry(open_storage(uri, endpoint_url=endpoint))
    barrier.wait()
    queue.put([str(registry.allocate("hat", "1.0", "heavy").name) for _ in range(count)])


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_processes_never_share_a_name(backend, tmp_path, request):
    if backend == "local":
        uri, endpoint = str(tmp_path / "store"), None
    else:
        endpoint, uri = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_uri")
    context = multiprocessing.get_context("spawn")
    processes, per_process = 4, 3
    barrier, queue = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_allocate_many, args=(uri, endpoint, barrier, per_process, queue))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    names = [name for _ in workers for name in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(names) == len(set(names)) == processes * per_process
    assert sorted(RunName.parse(n).number for n in names) == list(range(1, processes * per_process + 1))


def test_a_stale_writer_does_not_undo_how_an_attempt_ended(tmp_path):
    import time

    registry = RunRegistry(open_storage(str(tmp_path)))
    run = registry.allocate("srcnn", "6.2", "pico")
    run.mark_started()
    worker = registry.open(run.name)  # e.g. rank 0, holding status "running"
    time.sleep(1.1)  # times are kept to the second
    registry.open(run.name).finish("stopped_early")  # e.g. the sweep: Tune stopped the trial
    worker.log_step(3, loss=0.1)  # the worker's late write keeps the ending, and adds its step
    record = registry.open(run.name).record
    assert record["status"] == "stopped_early" and record["step_metrics"][-1]["step"] == 3
    time.sleep(1.1)
    resumed = registry.open(run.name)
    resumed.mark_started()  # a new attempt runs again
    assert registry.open(run.name).record["status"] == "running"


def test_tensorboard_events_in_the_run_folder(storage, tmp_path):
    """Every reported metric and the strip reach TensorBoard event files under runs/<name>/tensorboard/, which
    TensorBoard itself reads back (strings such as 'unavailable: ...' are left out, not written as numbers)."""
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunRegistry(storage).allocate("hat", "0.1", "pico")
    run.mark_started()
    run.log_step(1, loss=0.5, lr=1e-3)
    run.log_step(2, loss=0.25, lr=1e-3)
    png = io.BytesIO()
    Image.new("RGB", (12, 5), (200, 10, 10)).save(png, format="PNG")
    strip = run.log_strip(2, png.getvalue())
    run.log_eval(2, **{"model/psnr_rgb": 31.5, "model/lpips": "unavailable: no weights"}, strip=strip)
    run.finish()
    keys = [k for k in storage.list(f"runs/{run.name}/tensorboard/")]
    assert len(keys) == 2, keys  # one scalar file, one strip file
    local = tmp_path / "tb"
    local.mkdir()
    for key in keys:
        (local / key.rsplit("/", 1)[1]).write_bytes(storage.read_bytes(key))
    events = EventAccumulator(str(local), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [s.value for s in events.Scalars("train/loss")] == [0.5, 0.25]
    assert events.Scalars("eval/model/psnr_rgb")[0].value == pytest.approx(31.5)
    assert "eval/model/lpips" not in events.Tags()["scalars"]
    (image,) = events.Images("strip")
    assert (image.step, image.width, image.height) == (2, 12, 5)
    assert storage.exists(strip) and run.record["artefacts"]["latest_strip"] == strip
