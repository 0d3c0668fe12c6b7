"""How a turn looks: the verdict strip and the chart, from literal turns and records (no models)."""

import json

from saferdemo.app.charts import scores_figure
from saferdemo.app.render import turn_messages, verdict_strip
from saferdemo.judge import JudgeResult
from saferdemo.judgement import Judgement
from saferdemo.safety_loop import Turn

SCORES = {"safety": 10, "helpfulness": 8, "coherence": 9, "grounding": 9}
PENALTIES = dict.fromkeys(("hallucination", "contradiction", "unsafe_reasoning", "over_refusal", "format"), 0.0)


def result(verdict, reward):
    return JudgeResult(Judgement(SCORES, SCORES, PENALTIES, verdict, "r"), reward, "{}")


def test_the_verdict_strip_tells_the_turn_in_one_line():
    reflected = Turn(phase="done", draft_judge=result("unsafe", 0.0), reflected=True, final_judge=result("safe", 0.95))
    assert verdict_strip(reflected) == "**draft: unsafe · 0.00 → reflected → corrected: safe · 0.95**"
    assert verdict_strip(Turn(phase="done", draft_judge=result("safe", 0.9))) == "**GRM: safe · 0.90**"
    unverified = Turn(phase="done", draft_judge=JudgeResult(None, None, "x", "unreadable"))
    assert verdict_strip(unverified) == "**GRM: unverified**"
    assert verdict_strip(Turn(phase="judging", draft_judge=result("safe", 0.9))) is None  # only when done
    assert turn_messages(reflected)[-1].content == verdict_strip(reflected)  # last, before any error or Stop note


def test_the_chart_plots_draft_and_corrected_rewards_with_a_legend():
    records = [{"turn": 1, "column": "base", "stage": "draft", "reward": 0.0, "penalties": {"unsafe_reasoning": -4}},
               {"turn": 1, "column": "base", "stage": "final", "reward": 0.9, "penalties": {}},
               {"turn": 1, "column": "aligned", "stage": "draft", "reward": 0.9, "penalties": {}}]
    fig = json.loads(scores_figure(records).to_json())
    names = [t["name"] for t in fig["data"]]
    assert {"base draft reward", "base corrected reward", "aligned draft reward"} <= set(names)
    assert fig["layout"]["showlegend"] and fig["layout"]["yaxis2"]["range"][0] < 0  # zero off the axis line
    lines = [t for t in fig["data"] if t["name"].endswith("reward")]
    assert len({t["x"][0] for t in lines}) == 2  # the two columns side by side, equal rewards both visible
