"""Rollback: move `champion` back to an earlier version once its bundle answers; recorded like a promotion."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from tasks.registry import register
from tasks.registry.decision import (
    PROMOTED,
    ROLLED_BACK,
    PromotionDecision,
    champion_version,
    now_iso,
    promotion_history,
)
from tasks.registry.lock import promotion_lock
from tasks.registry.promote import failed_checks, move_champion

CHECK_TEXT = "a short sentence to check that the model answers"  # rollback's one prediction


class ChampionMoved(ValueError):
    """The champion changed while a promotion or rollback was deciding."""


def check_bundle_answers(bundle: Path) -> None:
    """Load a bundle's ONNX session and make one prediction; raise if it cannot serve."""
    # heavy (pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.registry.rollback stays light
    from tasks.inference.predictor import OnnxPredictor

    predictor = OnnxPredictor(bundle, threads=1)
    answers = predictor.predict([CHECK_TEXT], [CHECK_TEXT] if predictor.needs_pairs else None)
    if len(answers) != 1:
        raise ValueError(f"the bundle at {bundle} answered {len(answers)} results for one text")


def champion_chain(history: list[PromotionDecision]) -> list[str]:
    """The champions still standing behind each other, oldest first, from the log (oldest record first).

    A promotion stacks its version; a rollback to an older version drops the one it moved away
    from, and a move to a version already on the stack drops everything above it, so a version
    that was rolled back from is never rolled back to. A move --to a newer version (forward) stacks.
    """
    chain: list[str] = []
    for r in history:
        after = r.champion_after
        if r.decision not in (PROMOTED, ROLLED_BACK) or not after:
            continue
        before = r.champion_before
        if r.decision == ROLLED_BACK and before in chain and int(after) < int(before):
            chain.remove(before)  # rolled back from (to an older version): never the way back
        if after in chain:
            del chain[chain.index(after) + 1 :]
        else:
            chain.append(after)
    return chain


def previous_champion(name: str, current: str) -> str:
    """The champion before `current` in the promotion log, else the newest version below it."""
    chain = champion_chain(promotion_history(name))
    if len(chain) > 1 and chain[-1] == current:
        return chain[-2]
    older = [v.version for v in register.list_versions(name) if int(v.version) < int(current)]
    if not older:
        raise ValueError(
            f"model '{name}': no version before the champion (version {current}) to roll back to; "
            f"give one with --to VERSION"
        )
    return str(older[-1])


def rollback_champion(
    name: str, to_version: str | None = None, extra_tags: dict | None = None, break_lock: bool = False
) -> PromotionDecision:
    """Move `champion` back to an earlier version (the previous champion unless `to_version`); record it.

    The target's bundle is downloaded and answers one prediction before the alias moves: a
    rollback to a version that cannot serve is refused, with the champion left where it was.
    """
    with promotion_lock(name, "rollback", break_lock):
        current = champion_version(name)
        if current is None:
            raise ValueError(f"model '{name}' has no champion to roll back; promote one with `ftflow promote {name}`")
        target = str(to_version) if to_version is not None else previous_champion(name, current)
        mv = register.get_version(name, target)  # refuses unknown versions, listing the known ones
        if target == current:
            raise ValueError(f"version {target} of '{name}' is already champion; nothing to roll back")
        with tempfile.TemporaryDirectory(prefix="ftflow-rollback-") as tmp:
            try:
                check_bundle_answers(register.download_bundle(name, target, Path(tmp) / f"v{target}"))
            except Exception as e:  # whatever stops it from answering refuses the rollback
                raise ValueError(
                    f"model '{name}' version {target} cannot serve ({type(e).__name__}: {e}); the "
                    f"champion stays version {current}. Roll back to another version with "
                    f"--to VERSION"
                ) from e
        now = champion_version(name)
        if now != current:
            raise ChampionMoved(
                f"model '{name}': the champion changed while the rollback checked version {target} "
                f"(version {current} then, {now} now); nothing was moved. Run the rollback again"
            )
        warnings = failed_checks(dict(mv.tags))
        reason = f"rolled back from version {current} to {target}; its bundle loaded and answered" + (
            f" (note: {'; '.join(warnings)})" if warnings else ""
        )
        d = PromotionDecision(
            model_name=name,
            action="rollback",
            decision=ROLLED_BACK,
            challenger_version=target,
            champion_before=current,
            champion_after=target,
            reason=reason,
            time=now_iso(),
        )
        run_id = move_champion(d, extra_tags)
    return dataclasses.replace(d, record_run_id=run_id)
