"""Notebook 12 (agents): the course's agent model — the SFT model with a LoRA adapter trained on the steps of
the single agent (:mod:`course_utils.agent`) and the roles of the hand-off (:mod:`course_utils.agent_team`) — and
the four tools it is trained with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from course_utils.agent import agent_step_records
from course_utils.agent_team import team_records
from course_utils.tools import Tool

__all__ = ["AgentConfig", "agent_tools", "agent_training_records", "default_agent_config", "load_or_build_agent_model"]


@dataclass
class AgentConfig:
    """LoRA training of the course's agent on :func:`agent_step_records` of the train split's tasks."""

    tasks_per_kind: int = 600  # train tasks per kind (fewer where the split has fewer: legal)
    task_seed: int = 1  # which train tasks
    r: int = 16  # LoRA rank
    alpha: float = 32.0  # LoRA alpha
    max_steps: int = 800  # optimizer steps (about one pass over the conversations)
    batch_size: int = 16  # conversations per optimizer step
    lr: float = 3e-3  # learning rate
    replay: int = 200  # SFT training conversations mixed in, so reading and answering are kept
    team: bool = True  # the planner's, researcher's and writer's conversations too (course_utils.agent_team)
    new_tokens: bool = True  # train the embedding rows of the tokens pretraining never showed (; [ ] #)
    seed: int = 11  # data order


def default_agent_config(settings=None) -> AgentConfig:
    """The budget of this mode."""
    from course_utils.settings import get_settings

    if (settings or get_settings()).fast:
        return AgentConfig(tasks_per_kind=6, max_steps=6, batch_size=8, replay=16)
    return AgentConfig()


def agent_tools(world=None, index=None, settings=None) -> list[Tool]:
    """The agent's four tools over the course's world and index: the calculator, ``world_lookup`` with one
    passage of at most 300 characters (a step must fit the window), the date calculator, ``legal_lookup``."""
    from course_utils.tools import calculator, date_calculator, legal_lookup, world_lookup

    if world is None:
        from course_utils.data import world as load_world

        world = load_world(settings)
    if index is None:
        from course_utils.rag import load_or_build_index

        index = load_or_build_index(settings=settings)
    return [calculator(), world_lookup(index, k=1, max_chars=300), date_calculator(world), legal_lookup(world, k=1)]


def agent_training_records(config: AgentConfig, tokenizer, tools: Sequence[Tool], settings=None,
                           max_tokens: int = 256) -> list[dict[str, Any]]:
    """The steps of the train split's tasks (:func:`~course_utils.agent.agent_step_records`, tasks the retriever
    failed skipped), with ``config.team`` the three roles' conversations
    (:func:`~course_utils.agent_team.team_records`), those that fit ``max_tokens``, plus replayed SFT
    conversations, shuffled."""
    from course_utils.agent_tasks import build_agent_tasks
    from course_utils.data import world
    from course_utils.lora import adapter_training_mix

    tasks = build_agent_tasks(world(settings), config.tasks_per_kind, config.task_seed, "train")
    records, _ = agent_step_records(tasks, tools)
    if config.team:
        records += team_records(tasks, tools)[0]
    return adapter_training_mix(records, tokenizer, config.replay, config.seed, settings, max_tokens)


def load_or_build_agent_model(settings=None, config: AgentConfig | None = None, tools: Sequence[Tool] | None = None,
                              rebuild: bool = False):
    """The course's agent, a transformers folder (artifact ``agent-model``): the SFT model with a LoRA adapter
    trained on the agent's steps, merged (:func:`course_utils.lora.load_or_build_merged_adapter`)."""
    from transformers import AutoTokenizer

    from course_utils.lora import load_or_build_merged_adapter
    from course_utils.settings import get_settings
    from course_utils.sft import load_or_build_sft_model

    settings = settings or get_settings()
    config = config or default_agent_config(settings)
    tok = AutoTokenizer.from_pretrained(load_or_build_sft_model(settings))
    records = agent_training_records(config, tok, tools or agent_tools(settings=settings), settings)
    # The call format's ';' and the citations' '[', ']' and '#' never occur in the course corpus: their rows are
    # untrained, and LoRA alone leaves the adapter unable to write them (it wrote 'betweenght' for 'between;').
    return load_or_build_merged_adapter("agent-model", config, records, settings, rebuild, new_tokens=config.new_tokens)
