"""Progress of the feature visualisation stage where no terminal shows tqdm's bar."""

import logging

from generator.featurevis.progress import Progress


def test_progress_logs_count_rate_and_time_left_without_a_terminal(caplog):
    now = [100.0]
    caplog.set_level(logging.INFO, logger="weight_atlas")
    with Progress(1104, every=30, clock=lambda: now[0]) as progress:
        assert progress.bar.disable  # pytest captures the output: no terminal
        now[0] += 10
        progress.made(32)  # too soon for a line
        now[0] += 90
        progress.made(288)  # 320 in 100 s
        assert caplog.messages == ["feature visualisation: 320 of 1,104 pictures (29%), 3.2 a second, "
                                   "about 4 min left"]
        now[0] += 250
        progress.made(784)
    assert caplog.messages[-1] == "feature visualisation: 1,104 of 1,104 pictures (100%), 3.2 a second"
    assert progress.summary() == "feature visualisation: 1,104 pictures made in 6 min (3.2 a second)"
