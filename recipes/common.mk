# Shared rules of the recipes: numbered, idempotent stages; stamps in .stamps/ written last.
# Every stage is safe to re-run: snnasr skips finished work itself, and an interrupted
# `snnasr train` resumes from its last checkpoint on the next `make`.
SNNASR ?= snnasr
STAMPS := .stamps
ARCHS ?= lstm gru lif proposed alif scsr
# Runs the report collects; recursive, so a recipe may set ARCHS or RUNS after the include.
RUNS = $(ARCHS)
.DEFAULT_GOAL := all

# Train stamps are real results, not intermediate files for make to delete.
.PRECIOUS: $(STAMPS)/train-% $(STAMPS)/train-%_phone

$(STAMPS):
	mkdir -p $@

# train-% / eval-%: one run per architecture, config conf/train_<arch>.yaml.
$(STAMPS)/train-%: $(STAMPS)/features conf/train_%.yaml | $(STAMPS)
	$(SNNASR) train --arch $* --exp $* --config conf/train_$*.yaml $(if $(wildcard exp/$*/checkpoints/*.pt),--resume) $(TRAIN_ARGS)
	touch $@

$(STAMPS)/eval-%: $(STAMPS)/train-% | $(STAMPS)
	$(SNNASR) eval exp/$* --set $(EVAL_SET) --report-ops
	touch $@

# The last stage of every recipe: the paper-style report over all runs, printed.
.PHONY: all
all: exp/report.md
	@cat exp/report.md

.SECONDEXPANSION:
exp/report.md: $$(foreach r,$$(RUNS),$(STAMPS)/eval-$$(r))
	$(SNNASR) report
