"""Tests of kubling.scheduler: plugins, framework, queue and preemption."""
