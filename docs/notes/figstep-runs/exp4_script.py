import sys, time, random, torch, json
torch.set_num_threads(1)
from transformers import Qwen2VLImageProcessorPil
from training.miniature import world, sft
from training.miniature.evaluate import figstep_stats, honesty_stats
from saferdemo.loading import load_model, load_processor
ph=world.load_phrases()
model,proc=load_model(sys.argv[1]),load_processor(sys.argv[1])
t=time.time(); pool=sft.ImagePool(ph,0,per_phrase=8,unknown=900,other=300,no_card=150); print('pool',time.time()-t, flush=True)
stages=eval(sys.argv[2])
batches=sft.base_batches(ph, sft.Behaviour(comply_rate={"default":0.8,"hate_speech":0.3,"physical_harm":0.3}, reflection_correction_rate=0.5), pool)
for i,(steps,lr,vis,mix) in enumerate(stages):
    st=sft.Stage(f's{i}',steps,lr=lr,vision_lr_scale=vis,mix=mix,difficulty=(1.0,1.0),warmup_steps=10)
    losses=sft.train_stage(model, proc, st, batches, 50+i)
    f=figstep_stats(model,proc,ph,1,1234+1077); h=honesty_stats(model,proc,ph,12,1234+1078); h.pop('examples')
    print(sum(steps for steps,*_ in stages[:i+1]), f"loss {sum(losses[-10:])/10:.3f}", json.dumps(f), json.dumps(h), f"{time.time()-t:.0f}s", flush=True)
model.save_pretrained(sys.argv[3] if len(sys.argv) > 3 else '/work/main/build/exp4-base')
