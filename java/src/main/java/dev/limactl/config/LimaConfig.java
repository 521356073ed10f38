package dev.limactl.config;

import com.fasterxml.jackson.annotation.JsonProperty;

/**
 * A training run's configuration, one record per section, read from YAML/JSON (snake_case keys).
 * The paper's numbers are the defaults ({@code presets/defaults.yaml}).
 */
public record LimaConfig(Model model, Data data, Optimizer optimizer, Training training, Distributed distributed,
                         Checkpoint checkpoint, Adapter adapter) {

    /**
     * @param init         "pretrained" (load {@code path}, a Hugging Face LLaMA directory) or "random"
     * @param path         the pretrained checkpoint directory (init: pretrained)
     * @param tokenizer    tokenizer.model / tokenizer.json or a directory holding one; empty = {@code path}
     * @param architecture the shape of a random model (init: random)
     */
    /**
     * @param eotToken empty: LIMA's own end-of-turn token, added to the vocabulary (the paper's EOT); a
     *                 token of the tokenizer (e.g. Llama 3's "<|eot_id|>"): that token ends each turn instead
     */
    public record Model(String init, String path, String tokenizer, Architecture architecture, @JsonProperty("eot_token") String eotToken) {
        public Model {
            if (eotToken == null) eotToken = "";  // a run made before the key existed
        }
    }

    public record Architecture(@JsonProperty("hidden_size") int hiddenSize,
                               @JsonProperty("intermediate_size") int intermediateSize,
                               @JsonProperty("num_layers") int numLayers, @JsonProperty("num_heads") int numHeads,
                               @JsonProperty("num_kv_heads") int numKvHeads,
                               @JsonProperty("max_position_embeddings") int maxPositionEmbeddings,
                               @JsonProperty("rope_theta") double ropeTheta) {}

    /**
     * @param train     training examples (.arrow or .jsonl)
     * @param dev       optional dev examples, scored (perplexity) after each epoch
     * @param maxTokens longer examples are trimmed to this many tokens (LIMA: 2048)
     */
    public record Data(String train, String dev, @JsonProperty("max_tokens") int maxTokens) {}

    /** AdamW and the linear learning-rate schedule (lr at the first step, final_lr at the last, no warm-up). */
    public record Optimizer(double lr, @JsonProperty("final_lr") double finalLr, double beta1, double beta2, double eps,
                            @JsonProperty("weight_decay") double weightDecay,
                            @JsonProperty("grad_clip") double gradClip,
                            String schedule,
                            @JsonProperty("warmup_steps") long warmupSteps,
                            @JsonProperty("warmup_ratio") double warmupRatio) {
        /** The learning-rate schedules (LIMA's is linear). */
        public static final java.util.List<String> SCHEDULES = java.util.List.of("linear", "cosine", "constant");

        public Optimizer {
            if (schedule == null) schedule = "linear";  // a run made before the key existed
        }
    }

    /**
     * @param batchSize        examples per optimiser step (LIMA: 32; 64 for smaller models)
     * @param microBatchTokens tokens per micro-batch (rows x row length); gradients accumulate over them
     * @param residDropout     residual dropout at the top layer, from 0 at the bottom (LIMA: 0.3; 0.2 smaller)
     * @param saveDtype        dtype of the per-epoch checkpoints: bf16 or f32
     * @param device           cpu, cuda or cuda:N (the CUDA backend plugin, bf16 with fp32 master weights)
     * @param recomputeActivations CUDA: keep only each layer's input and recompute the rest in backward
     * @param offload          full fine-tuning's optimiser in host memory: auto (on a CUDA device, when the plain
     *                         mode cannot fit it), on, off
     */
    public record Training(int epochs, @JsonProperty("batch_size") int batchSize,
                           @JsonProperty("micro_batch_tokens") int microBatchTokens,
                           @JsonProperty("resid_dropout") double residDropout, long seed, int threads,
                           @JsonProperty("save_dtype") String saveDtype, String device,
                           @JsonProperty("recompute_activations") boolean recomputeActivations, String offload) {
        public static final java.util.List<String> OFFLOAD = java.util.List.of("auto", "on", "off");

        public Training {
            if (offload == null) offload = "auto";  // a run made before the key existed
            if (offload.equals("true")) offload = "on";  // YAML 1.1 reads a bare on/off as a boolean
            if (offload.equals("false")) offload = "off";
        }
    }

    /**
     * Data parallelism, used when the run is launched as several ranks (torchrun, Slurm, Open MPI or
     * {@code limactl train --nproc-per-node}).
     *
     * @param backend    the communicator: gloo (CPU ranks)
     * @param zeroStage  0: replicated optimiser state; 1 and 2: each rank keeps its shard of it (2: and of
     *                   the gradient); 3: and of the weights, each layer gathered when it runs
     * @param timeoutS   every rank must arrive, and every collective finish, within this
     * @param rendezvous file:DIR, a directory every rank reaches; tcp://HOST:PORT/JOB, a key-value server
     *                   rank 0 starts on HOST (a redis-server); empty: MASTER_ADDR:MASTER_PORT when the
     *                   launcher gives them, else RUN/rendezvous/JOB
     */
    /**
     * @param stateEverySteps save the resumable state every this many steps within an epoch (0: when 5
     *                        minutes of work have passed); it is always saved at the start and after each epoch
     * @param keep            which epoch checkpoints stay: all, an epoch N, a range A-B, last:N, comma-separated
     */
    public record Checkpoint(@JsonProperty("state_every_steps") int stateEverySteps, String keep) {
        public Checkpoint {
            if (keep == null) keep = "all";  // a run made before the key existed
        }
    }

    /**
     * Full fine-tuning (type none) or LoRA adapters over the frozen model (type lora), saved in PEFT's
     * format; train_eot also trains the EOT token's embedding and LM-head rows (PEFT's
     * trainable_token_indices).
     */
    public record Adapter(String type, int r, double alpha, double dropout, String targets, @JsonProperty("train_eot") boolean trainEot,
                          boolean rslora, @JsonProperty("double_quant") boolean doubleQuant) {
        /** Adapters are trained (lora or qlora). */
        public boolean lora() {
            return "lora".equals(type) || "qlora".equals(type);
        }

        /** The base's projections are stored in NF4 while training (QLoRA). */
        public boolean qlora() {
            return "qlora".equals(type);
        }

        /** The target modules: all seven for all-linear, else the comma list. */
        public java.util.Set<dev.limactl.engine.Model.LoraTarget> targetSet() {
            java.util.Set<dev.limactl.engine.Model.LoraTarget> out = java.util.EnumSet.noneOf(dev.limactl.engine.Model.LoraTarget.class);
            if (targets.trim().equals("all-linear")) return java.util.EnumSet.allOf(dev.limactl.engine.Model.LoraTarget.class);
            for (String t : targets.split(",")) {
                if (t.isBlank()) continue;
                out.add(dev.limactl.engine.Model.LoraTarget.valueOf(t.trim()));
            }
            return out;
        }
    }

    public record Distributed(String backend, @JsonProperty("zero_stage") int zeroStage, @JsonProperty("timeout_s") int timeoutS,
                              String rendezvous) {}
}
