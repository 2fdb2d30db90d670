from services.counter.wiring import main

main()
