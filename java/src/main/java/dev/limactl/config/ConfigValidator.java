package dev.limactl.config;

import java.util.Set;

/** Range and consistency checks of a {@link LimaConfig}; each error names the key. */
final class ConfigValidator {
    private ConfigValidator() {}

    static void validate(LimaConfig c) {
        LimaConfig.Model m = c.model();
        require(Set.of("pretrained", "random").contains(m.init()), "model.init", "must be \"pretrained\" or \"random\", got \"" + m.init() + "\"");
        if (m.init().equals("pretrained")) {
            require(m.path() != null && !m.path().isBlank(), "model.path", "is required when model.init is \"pretrained\"");
        } else {
            LimaConfig.Architecture a = m.architecture();
            positive(a.hiddenSize(), "model.architecture.hidden_size");
            positive(a.intermediateSize(), "model.architecture.intermediate_size");
            positive(a.numLayers(), "model.architecture.num_layers");
            positive(a.numHeads(), "model.architecture.num_heads");
            positive(a.numKvHeads(), "model.architecture.num_kv_heads");
            positive(a.maxPositionEmbeddings(), "model.architecture.max_position_embeddings");
            require(a.numHeads() % a.numKvHeads() == 0, "model.architecture.num_kv_heads", "must divide num_heads");
            require(a.hiddenSize() % a.numHeads() == 0 && (a.hiddenSize() / a.numHeads()) % 2 == 0,
                    "model.architecture.hidden_size", "must be num_heads x an even head size");
            require(m.tokenizer() != null && !m.tokenizer().isBlank(), "model.tokenizer", "is required when model.init is \"random\"");
        }
        require(c.data().train() != null && !c.data().train().isBlank(), "data.train", "is required");
        require(c.data().maxTokens() >= 2, "data.max_tokens", "must be >= 2, got " + c.data().maxTokens());
        LimaConfig.Optimizer o = c.optimizer();
        require(o.lr() > 0 && Double.isFinite(o.lr()), "optimizer.lr", "must be > 0, got " + o.lr());
        require(o.finalLr() >= 0 && o.finalLr() <= o.lr(), "optimizer.final_lr", "must be in [0, lr], got " + o.finalLr());
        require(o.beta1() >= 0 && o.beta1() < 1, "optimizer.beta1", "must be in [0, 1), got " + o.beta1());
        require(o.beta2() >= 0 && o.beta2() < 1, "optimizer.beta2", "must be in [0, 1), got " + o.beta2());
        require(o.eps() > 0, "optimizer.eps", "must be > 0, got " + o.eps());
        require(o.weightDecay() >= 0, "optimizer.weight_decay", "must be >= 0, got " + o.weightDecay());
        require(o.gradClip() >= 0 && Double.isFinite(o.gradClip()), "optimizer.grad_clip", "must be >= 0 (0 = off), got " + o.gradClip());
        require(LimaConfig.Optimizer.SCHEDULES.contains(o.schedule()), "optimizer.schedule",
                "must be one of " + LimaConfig.Optimizer.SCHEDULES + " (LIMA: linear), got " + o.schedule());
        require(o.warmupSteps() >= 0, "optimizer.warmup_steps", "must be >= 0, got " + o.warmupSteps());
        require(o.warmupRatio() >= 0 && o.warmupRatio() < 1, "optimizer.warmup_ratio", "must be in [0, 1), got " + o.warmupRatio());
        require(o.warmupSteps() == 0 || o.warmupRatio() == 0, "optimizer.warmup_ratio", "and optimizer.warmup_steps: give one of them, not both");
        LimaConfig.Training t = c.training();
        positive(t.epochs(), "training.epochs");
        positive(t.batchSize(), "training.batch_size");
        positive(t.microBatchTokens(), "training.micro_batch_tokens");
        require(t.residDropout() >= 0 && t.residDropout() < 1, "training.resid_dropout", "must be in [0, 1), got " + t.residDropout());
        require(t.threads() >= 0, "training.threads", "must be >= 0 (0 = all cores), got " + t.threads());
        require(t.device() != null && t.device().matches("cpu|cuda(:\\d{1,3})?"), "training.device",
                "must be cpu, cuda or cuda:N, got " + t.device());
        require(LimaConfig.Training.OFFLOAD.contains(t.offload()), "training.offload", "must be auto, on or off, got \"" + t.offload() + "\"");
        require(!t.offload().equals("on") || !c.adapter().lora(), "training.offload", "on is for full fine-tuning; an adapter run (adapter.type "
                + c.adapter().type() + ") keeps its small optimiser state with it");
        require(Set.of("bf16", "f32").contains(t.saveDtype()), "training.save_dtype", "must be bf16 or f32, got \"" + t.saveDtype() + "\"");
        LimaConfig.Distributed d = c.distributed();
        require(Set.of("auto", "gloo", "nccl").contains(d.backend()), "distributed.backend", "must be auto, gloo (CPU ranks) or nccl"
                + " (CUDA ranks), got \"" + d.backend() + "\"");
        boolean cuda = t.device() != null && t.device().startsWith("cuda");
        require(!d.backend().equals("nccl") || cuda, "distributed.backend", "nccl is for CUDA ranks; training.device is " + t.device()
                + " (CPU ranks use gloo)");
        require(!d.backend().equals("gloo") || !cuda, "distributed.backend", "gloo is for CPU ranks; CUDA ranks (training.device "
                + t.device() + ") communicate over nccl");
        require(d.zeroStage() >= 0 && d.zeroStage() <= 3, "distributed.zero_stage", "must be 0, 1, 2 or 3, got " + d.zeroStage());
        require(d.zeroStage() < 3 || !c.adapter().lora(), "distributed.zero_stage",
                "3 shards the weights of full fine-tuning; an adapter run (adapter.type " + c.adapter().type()
                        + ", its base frozen) uses 0, 1 or 2");
        positive(d.timeoutS(), "distributed.timeout_s");
        try {
            KeepRule.parse(c.checkpoint().keep()).checkAgainst(Math.max(1, c.training().epochs()));
        } catch (IllegalArgumentException e) {
            require(false, "checkpoint.keep", e.getMessage());
        }
        require(c.checkpoint().stateEverySteps() >= 0, "checkpoint.state_every_steps", "must be >= 0 (0 = every ~5 minutes), got "
                + c.checkpoint().stateEverySteps());
        LimaConfig.Adapter a = c.adapter();
        require(java.util.Set.of("none", "lora", "qlora").contains(a.type()), "adapter.type", "must be none, lora or qlora, got \""
                + a.type() + "\"");
        if (a.lora()) {
            require(a.r() >= 1 && a.r() <= 65536, "adapter.r", "must be in [1, 65536], got " + a.r());
            require(a.alpha() > 0 && Double.isFinite(a.alpha()), "adapter.alpha", "must be > 0, got " + a.alpha());
            require(a.dropout() >= 0 && a.dropout() < 1, "adapter.dropout", "must be in [0, 1), got " + a.dropout());
            java.util.List<String> known = java.util.Arrays.stream(dev.limactl.engine.Model.LoraTarget.values()).map(Enum::name).toList();
            boolean targetsOk = a.targets() != null && !a.targets().isBlank() && (a.targets().trim().equals("all-linear")
                    || java.util.Arrays.stream(a.targets().split(",")).map(String::trim).allMatch(known::contains));
            require(targetsOk, "adapter.targets", "must be all-linear or a comma list of " + String.join(",", known) + ", got \""
                    + a.targets() + "\"");
        }
        require(d.rendezvous() != null && (d.rendezvous().isEmpty() || (d.rendezvous().startsWith("file:") && d.rendezvous().length() > 5)
                        || d.rendezvous().matches("tcp://(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9_.-]+):\\d{1,5}/[A-Za-z0-9_.-]+")),
                "distributed.rendezvous", "must be empty, file:DIR or tcp://HOST:PORT/JOB, got \"" + d.rendezvous() + "\"");
    }

    private static void positive(long v, String key) {
        require(v > 0, key, "must be > 0, got " + v);
    }

    private static void require(boolean ok, String key, String why) {
        if (!ok) throw new ConfigException("config key \"" + key + "\" " + why);
    }
}
