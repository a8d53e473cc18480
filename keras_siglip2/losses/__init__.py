from keras_siglip2.losses.sigmoid import SigmoidLoss, chunked_sigmoid_loss, sigmoid_loss
