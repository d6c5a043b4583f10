# Shared rules of the recipes: numbered, idempotent stages; stamps in .stamps/ written last.
# Every stage is safe to re-run: snnasr skips finished work itself, and an interrupted
# `snnasr train` resumes from its last checkpoint on the next `make`.
SNNASR ?= snnasr
STAMPS := .stamps
ARCHS ?= lstm gru lif proposed alif scsr
# SEEDS="1 2 3": every architecture once per seed (runs <arch>-s<seed>; the report gives mean ± sd).
SEEDS ?=
# Runs the report collects; recursive, so a recipe may set ARCHS or RUNS after the include.
RUNS = $(if $(SEEDS),$(foreach a,$(ARCHS),$(foreach s,$(SEEDS),$(a)-s$(s))),$(ARCHS))
# A run name is <conf>[-s<seed>]: config conf/train_<conf>.yaml, architecture = <conf> up to its
# first "_" (lif_official -> lif), seed from the suffix (else the config's).
run_conf = $(firstword $(subst -s, ,$(1)))
run_arch = $(firstword $(subst _, ,$(call run_conf,$(1))))
run_seed = $(word 2,$(subst -s, ,$(1)))
.DEFAULT_GOAL := all

# Train stamps are real results, not intermediate files for make to delete.
.PRECIOUS: $(STAMPS)/train-% $(STAMPS)/train-%_phone

$(STAMPS):
	mkdir -p $@

$(STAMPS)/eval-%: $(STAMPS)/train-% | $(STAMPS)
	$(SNNASR) eval exp/$* --set $(EVAL_SET) --report-ops
	touch $@

# The last stage of every recipe: the paper-style report over all runs, printed.
.PHONY: all
all: exp/report.md
	@cat exp/report.md

.SECONDEXPANSION:
# train-% / eval-%: one run per name in RUNS (see run_conf above).
$(STAMPS)/train-%: $(STAMPS)/features conf/train_$$(call run_conf,$$*).yaml | $(STAMPS)
	$(SNNASR) train --arch $(call run_arch,$*) --exp $* --config conf/train_$(call run_conf,$*).yaml $(if $(call run_seed,$*),seed=$(call run_seed,$*)) $(if $(wildcard exp/$*/checkpoints/*.pt),--resume) $(TRAIN_ARGS)
	touch $@

# The report covers exactly the runs of this invocation (other experiments in exp/ stay out).
exp/report.md: $$(foreach r,$$(RUNS),$(STAMPS)/eval-$$(r))
	$(SNNASR) report $(addprefix exp/,$(RUNS))
