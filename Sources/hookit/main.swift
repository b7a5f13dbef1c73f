print("hookit")
