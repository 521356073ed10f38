// Runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build) and prints one JSON line: the
// file's BOS/EOS/EOT ids as llama.cpp reads them, llama.cpp's token ids of the given texts (no BOS),
// and greedy continuations of the given prompt ids, which llama.cpp stops at an end-of-generation
// token (EOS or EOT) by itself, or at max_new_tokens ("stopped" says which).
// usage: node run_gguf.mjs NODE_LLAMA_CPP_DIR FILE.gguf INPUT.json  (INPUT: {"texts": [...], "prompts": [[ids]...], "max_new_tokens": N})
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const [nlcDir, file, inputFile] = process.argv.slice(2);
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(path.join(nlcDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const input = JSON.parse(fs.readFileSync(inputFile, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: file});
const out = {bos: model.tokens.bos, eos: model.tokens.eos, eot: model.tokens.eot, texts: [], generated: [], stopped: []};
for (const t of input.texts) out.texts.push(Array.from(model.tokenize(t, false)));
const context = await model.createContext({contextSize: 512});
for (const p of input.prompts) {
    const seq = context.getSequence();
    const gen = [];
    let stopped = "end of generation";
    for await (const tok of seq.evaluate(p, {temperature: 0})) {
        if (model.isEogToken(tok)) break;
        gen.push(tok);
        if (gen.length >= input.max_new_tokens) {
            stopped = "max_new_tokens";
            break;
        }
    }
    out.generated.push(gen);
    out.stopped.push(stopped);
    seq.dispose();
}
console.log(JSON.stringify(out));
process.exit(0);
