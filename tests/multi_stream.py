"""Several streams through one effect, for the tests that compare batched with one-at-a-time editing.

`play_streams(effect, frames, concurrent)`: each stream (its own Session and Controls) processes the same frames,
each frame awaiting its own edit (`wait=True`); concurrently (a barrier per frame, so all streams' faces wait
together) or one stream after the other. Returns {stream name: [output frame copies]}; every session must end
without an error.
"""
from __future__ import annotations

import threading

from stream.controls import Controls

# Three streams on different directions and α (a crossed latent or coefficient would show as a wrong edit).
STREAMS = {"a": {"smile": 3.0}, "b": {"eyes_closing": -2.0}, "c": {"smile": 1.0, "eyes_closing": 2.5}}


def play_streams(effect, frames, concurrent: bool, streams: dict = STREAMS,
                 barrier_s: float = 60.0, join_s: float = 180.0) -> dict:
    sessions = {name: effect.new_session(controls=Controls(directions=dirs), stream_id=name)
                for name, dirs in streams.items()}
    outputs = {name: [] for name in streams}
    barrier = threading.Barrier(len(streams))

    def play(name):
        for frame in frames:
            if concurrent:
                barrier.wait(timeout=barrier_s)
            outputs[name].append(sessions[name].process(frame, wait=True).frame.copy())

    try:
        if concurrent:
            threads = [threading.Thread(target=play, args=(name,)) for name in streams]
            for t in threads:
                t.start()
            for t in threads:
                t.join(join_s)
        else:
            for name in streams:
                play(name)
        for name, session in sessions.items():
            assert session.errors.total == 0, (name, session.errors.as_dict())
            assert len(outputs[name]) == len(frames), (name, len(outputs[name]))
    finally:
        for session in sessions.values():
            session.close()
    return outputs
