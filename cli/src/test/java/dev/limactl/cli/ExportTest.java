package dev.limactl.cli;

import static dev.limactl.cli.CliTest.limactl;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.tokenizer.HfTokenizerFiles;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** limactl export --format gguf, read back with the gguf Python package: every tensor and the metadata. */
class ExportTest {
    @TempDir Path dir;

    @Test
    void ggufExportsReadBackWithLlamaCppsReader() throws Exception {
        Path run = dir.resolve("run");
        // intermediate_size 48: the down projection's rows are not blocks of 32, so q8_0 keeps it in f16
        String[] args = CliTest.concat(new String[] {"-q", "train", "--preset", "demo", "--init", "random", "--run", run.toString(),
                "--set", "training.epochs=1", "--set", "training.save_dtype=f32", "--set", "model.architecture.intermediate_size=48"},
                java.util.Arrays.copyOfRange(CliTest.SMALL, 0, 2));
        assertEquals(0, limactl(CliTest.concat(args, java.util.Arrays.copyOfRange(CliTest.SMALL, 4, 8))).code());
        Path ck = run.resolve("checkpoints/epoch-01");
        // bad requests first: nothing is written
        assertEquals(ExitCodes.INVALID_INPUT, limactl("export", "-m", ck.toString(), "--type", "q4_k", "-o", dir.resolve("x.gguf").toString()).code());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("export", "-m", ck.toString(), "--format", "onnx", "-o", dir.resolve("x.gguf").toString()).code());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("export", "-m", dir.resolve("none").toString(), "-o", dir.resolve("x.gguf").toString()).code());
        assertEquals(ExitCodes.INVALID_INPUT, limactl("export", "-m", ck.toString(), "-o", dir.toString()).code());
        Path noSp = dir.resolve("nosp");
        Files.createDirectories(noSp);
        for (String f : new String[] {"config.json", "model.safetensors", "limactl.json", "tokenizer.json"}) Files.copy(ck.resolve(f), noSp.resolve(f));
        CliTest.Run r = limactl("export", "-m", noSp.toString(), "-o", dir.resolve("x.gguf").toString());
        assertEquals(ExitCodes.INVALID_INPUT, r.code());
        // its tokenizer.json is SentencePiece-style BPE (LLaMA's, converted): llama.cpp needs the scores of tokenizer.model for it
        assertTrue(r.err().contains("only a byte-level BPE tokenizer.json (GPT-2, Llama 3) exports to GGUF without a tokenizer.model"), r.err());
        assertFalse(Files.exists(dir.resolve("x.gguf")));

        CliTest.assumePython("gguf, numpy, safetensors", "the read-back check is skipped");
        Path script = dir.resolve("check_gguf.py");
        try (var s = ExportTest.class.getResourceAsStream("check_gguf.py")) {
            Files.write(script, s.readAllBytes());
        }
        JsonNode cfg = new ObjectMapper().readTree(ck.resolve("config.json").toFile());
        int eot = new ObjectMapper().readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt();
        for (String type : new String[] {"f16", "bf16", "q8_0"}) {
            Path out = dir.resolve("model-" + type + ".gguf");
            r = limactl("export", "-m", ck.toString(), "--type", type, "-o", out.toString());
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("wrote " + out), r.out());
            JsonNode g = CliTest.pythonJson(script.toString(), out.toString(), ck.toString(), type);
            int layers = cfg.get("num_hidden_layers").asInt();
            boolean tied = cfg.path("tie_word_embeddings").asBoolean(false);
            assertEquals(1 + 9 * layers + 1 + (tied ? 0 : 1), g.get("tensors").asInt(), g.toString());
            assertEquals("llama", g.get("arch").asText());
            assertEquals(layers, g.get("blocks").asInt());
            assertEquals(cfg.get("hidden_size").asInt(), g.get("embd").asInt());
            assertEquals(cfg.get("num_attention_heads").asInt(), g.get("heads").asInt());
            assertEquals(cfg.get("num_key_value_heads").asInt(), g.get("kv_heads").asInt());
            assertEquals(cfg.get("intermediate_size").asInt(), g.get("ff").asInt());
            assertEquals(cfg.get("vocab_size").asInt(), g.get("n_tokens").asInt(), "every token, EOT included");
            assertEquals(HfTokenizerFiles.EOT, g.get("last_token").asText());
            assertEquals(3, g.get("last_type").asInt(), "EOT is a control token");
            assertEquals(eot, g.get("eot").asInt());
            assertEquals(HfTokenizerFiles.CHAT_TEMPLATE, g.get("template").asText());
            assertTrue(g.get("types").toString().contains(type.toUpperCase()), g.toString());
        }
        // rotary scaling travels: llama3 as llama.cpp's rope_freqs factors, linear as metadata
        for (String rope : new String[] {"{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                + " \"original_max_position_embeddings\": 16}", "{\"rope_type\": \"linear\", \"factor\": 4.0}"}) {
            Path scaled = dir.resolve("scaled-" + rope.hashCode());
            Files.createDirectories(scaled);
            try (var files = Files.list(ck)) {
                for (Path f : files.toList()) Files.copy(f, scaled.resolve(f.getFileName()));
            }
            var c = (com.fasterxml.jackson.databind.node.ObjectNode) new ObjectMapper().readTree(scaled.resolve("config.json").toFile());
            c.set("rope_scaling", new ObjectMapper().readTree(rope));
            c.remove("rope_parameters");
            Files.writeString(scaled.resolve("config.json"), c.toString());
            Path out = dir.resolve("scaled.gguf");
            r = limactl("export", "-m", scaled.toString(), "-o", out.toString());
            assertEquals(0, r.code(), r.err());
            JsonNode g = CliTest.pythonJson(script.toString(), out.toString(), scaled.toString(), "f16");
            if (rope.contains("llama3")) assertEquals(cfg.get("hidden_size").asInt() / cfg.get("num_attention_heads").asInt() / 2, g.get("rope_freqs").asInt());
            else assertEquals("linear", g.get("scaling_type").asText(), g.toString());
        }
    }

    /**
     * The GGUF of a model fine-tuned to answer "Yes." and stop, run in llama.cpp itself: its token ids
     * agree with limactl's, and its greedy answer is limactl's, ending at LIMA's EOT by itself. (The demo
     * tokenizer normalises text, NFKC and repeated spaces, which llama.cpp does not do: the texts here
     * have none; LLaMA's own tokenizer has no normaliser.)
     */
    @Test
    void ggufRunsInLlamaCppAsInLimactl() throws Exception {
        Path data = CliTest.yesData(dir), run = dir.resolve("yes");
        CliTest.Run t = limactl("-q", "train", "--run", run.toString(), "--preset", "demo", "--data", data.toString(), "--set", "training.epochs=30",
                "--set", "optimizer.lr=1e-2", "--set", "optimizer.final_lr=1e-3", "--set", "training.batch_size=8", "--set", "training.resid_dropout=0",
                "--set", "checkpoint.keep=last:1", "--set", "data.dev=");
        assertEquals(0, t.code(), t.err());
        Path ck = run.resolve("checkpoints/epoch-30"), gguf = dir.resolve("yes.gguf");
        assertEquals(0, limactl("-q", "export", "-m", ck.toString(), "--type", "f16", "-o", gguf.toString()).code());
        int eot = new ObjectMapper().readTree(ck.resolve("limactl.json").toFile()).get("eot_token_id").asInt();
        List<String> texts = List.of("Hello world", "Question number 3: say yes?", "emoji \uD83D\uDE00 x", "x = {'a': [1, 2, 3]}", "caf\u00e9 na\u00efve");
        try (dev.limactl.tokenizer.Tokenizer tok = dev.limactl.tokenizer.Tokenizer.open(ck)) {
            dev.limactl.chat.ChatFormat f = new dev.limactl.chat.ChatFormat(tok, eot, 4096);
            List<int[]> prompts = List.of(f.prompt(List.of(new dev.limactl.data.Turn(dev.limactl.data.Turn.USER, "Question number 3: say yes?"))));
            JsonNode l = CliTest.llamaCpp(dir, gguf, texts, prompts, 16);
            assertEquals(eot, l.get("eot").asInt(), "llama.cpp reads LIMA's EOT from the file");
            assertEquals(tok.bosId(), l.get("bos").asInt());
            for (int i = 0; i < texts.size(); i++) {
                List<Integer> want = new java.util.ArrayList<>();
                for (int id : tok.encode(texts.get(i))) want.add(id);
                List<Integer> got = new java.util.ArrayList<>();
                l.get("texts").get(i).forEach(x -> got.add(x.asInt()));
                assertEquals(want, got, "llama.cpp's ids of " + texts.get(i));
            }
            Path answers = dir.resolve("answers.jsonl");
            Path prompt = dir.resolve("prompt.jsonl");
            Files.writeString(prompt, "{\"id\": \"q\", \"conversations\": [\"Question number 3: say yes?\"]}\n");
            CliTest.Run g = limactl("-q", "generate", "-m", ck.toString(), "--prompts", prompt.toString(), "--out", answers.toString(),
                    "--temperature", "0", "--repetition-penalty", "1", "--max-new-tokens", "16");
            assertEquals(0, g.code(), g.err());
            JsonNode mine = new ObjectMapper().readTree(Files.readAllLines(answers).get(0));
            assertEquals("eot", mine.get("finish").asText(), mine.toString());
            assertEquals("end of generation", l.get("stopped").get(0).asText(), "llama.cpp did not stop at the EOT: " + l);
            int[] ids = new int[l.get("generated").get(0).size()];
            for (int i = 0; i < ids.length; i++) ids[i] = l.get("generated").get(0).get(i).asInt();
            assertEquals(mine.get("response").asText(), tok.decode(ids), "llama.cpp and limactl answered differently");
        }
        // the same model with projection biases (attention_bias, mlp_bias): exported, read back, and run by llama.cpp as by limactl
        Path biased = dir.resolve("biased");
        Files.createDirectories(biased);
        try (var files = Files.list(ck)) {
            for (Path f : files.toList()) Files.copy(f, biased.resolve(f.getFileName()));
        }
        CliTest.python("-c", String.join("\n",
                "import json, sys, torch",
                "from safetensors.torch import load_file, save_file",
                "d = sys.argv[1]; cfg = json.load(open(d + '/config.json'))",
                "cfg['attention_bias'] = True; cfg['mlp_bias'] = True; json.dump(cfg, open(d + '/config.json', 'w'))",
                "w = load_file(d + '/model.safetensors'); g = torch.Generator().manual_seed(5)",
                "for l in range(cfg['num_hidden_layers']):",
                "    for m in ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']:",
                "        rows = w['model.layers.%d.%s.weight' % (l, m)].shape[0]",
                "        w['model.layers.%d.%s.bias' % (l, m)] = (torch.randn(rows, generator=g) * 0.05).to(w['model.norm.weight'].dtype)",
                "save_file(w, d + '/model.safetensors', metadata={'format': 'pt'})", ""), biased.toString());
        Path bg = dir.resolve("biased.gguf");
        CliTest.Run x = limactl("-q", "export", "-m", biased.toString(), "--type", "f16", "-o", bg.toString());
        assertEquals(0, x.code(), x.err());
        Path script = dir.resolve("check_gguf.py");
        try (var s = ExportTest.class.getResourceAsStream("check_gguf.py")) {
            Files.write(script, s.readAllBytes());
        }
        JsonNode back = CliTest.pythonJson(script.toString(), bg.toString(), biased.toString(), "f16");
        JsonNode bc = new ObjectMapper().readTree(biased.resolve("config.json").toFile());
        assertEquals(1 + 16 * bc.get("num_hidden_layers").asInt() + 1 + (bc.path("tie_word_embeddings").asBoolean(false) ? 0 : 1),
                back.get("tensors").asInt(), "every weight and the 7 biases of each layer: " + back);
        Path answers = dir.resolve("biased-answers.jsonl"), prompt = dir.resolve("prompt.jsonl");
        CliTest.Run g = limactl("-q", "generate", "-m", biased.toString(), "--prompts", prompt.toString(), "--out", answers.toString(),
                "--temperature", "0", "--repetition-penalty", "1", "--max-new-tokens", "16");
        assertEquals(0, g.code(), g.err());
        JsonNode mine = new ObjectMapper().readTree(Files.readAllLines(answers).get(0));
        try (dev.limactl.tokenizer.Tokenizer tok = dev.limactl.tokenizer.Tokenizer.open(biased)) {
            dev.limactl.chat.ChatFormat f = new dev.limactl.chat.ChatFormat(tok, eot, 4096);
            JsonNode l = CliTest.llamaCpp(dir, bg, List.of(), List.of(f.prompt(List.of(new dev.limactl.data.Turn(dev.limactl.data.Turn.USER,
                    "Question number 3: say yes?")))), 16);
            int[] ids = new int[l.get("generated").get(0).size()];
            for (int i = 0; i < ids.length; i++) ids[i] = l.get("generated").get(0).get(i).asInt();
            assertEquals(mine.get("response").asText(), tok.decode(ids), "llama.cpp and limactl answered the biased model differently");
            assertEquals(mine.get("finish").asText().equals("eot") ? "end of generation" : "max_new_tokens", l.get("stopped").get(0).asText());
        }
    }
}
